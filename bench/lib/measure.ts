// A throughput point: publish as fast as the peer takes it, read the clients'
// counters and the servers' CPU around a measurement window after a warm-up.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Deployment } from './deploy.js'
import type { BenchArgs } from './args.js'
import type { DriveArgs } from '../server/main.js'

export interface Throughput {
  /** Frames received by all clients per second. */
  framesPerSec: number
  /** CPU time of the server processes per frame received, microseconds. */
  cpuPerFrame: number
  /** Events published from the start of the drive to the halt (warm-up included). */
  published: number
}

/** With `last`, the deployment is stopped next, so its backlog is not drained (peers without backpressure hold seconds of it). */
export async function throughput (deployment: Deployment, drive: DriveArgs, args: BenchArgs, last = false): Promise<Throughput> {
  await deployment.drive(drive)
  await sleep(args.warmup * 1000)
  const before = await deployment.snapshot()
  await sleep(args.seconds * 1000)
  const after = await deployment.snapshot()
  const published = await deployment.halt(!last)
  const frames = after.events - before.events
  return {
    framesPerSec: frames / ((after.at - before.at) / 1000),
    cpuPerFrame: frames === 0 ? NaN : (after.cpu - before.cpu) / frames,
    published
  }
}
