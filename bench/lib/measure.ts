// The two kinds of point. Throughput: publish as fast as the peer takes it,
// read the clients' counters and the servers' CPU around a measurement window
// after a warm-up. Fixed rate: publish at a set rate and read latency.
import { setTimeout as sleep } from 'node:timers/promises'
import { brokerCpu, brokerCpuBetween } from './broker-cpu.js'
import type { Deployment } from './deploy.js'
import type { LatencySummary } from './hist.js'
import type { BenchArgs } from './args.js'
import type { DriveArgs } from '../server/main.js'

export interface Throughput {
  /** Frames received by all clients per second. */
  framesPerSec: number
  /** CPU time of the server processes per frame received, microseconds. */
  cpuPerFrame: number
  /** Events published from the start of the drive to the halt (warm-up included). */
  published: number
  /** The servers' and the generators' CPU over the window, percent of one core: near 100, that side bounds the rate. */
  server: number
  generator: number
  /** The RabbitMQ nodes the peer uses, added up, over the window (bench/lib/broker-cpu.ts). */
  broker: number | undefined
  /** Clients closed by the end of the window (the plugin's 4008 among them), and publishes the servers counted as failed so far: a point's own explanation of a low or zero rate. */
  closed: number
  /** Those clients by the close code the server sent ('none': no close frame). */
  closeCodes: Record<string, number>
  failed: number
}

/** CPU time (µs) over a window of `elapsedMs`, in percent of one core. */
const percentOf = (elapsedMs: number): (us: number) => number => (us) => us / elapsedMs / 10

/** With `last`, the deployment is stopped next, so its backlog is not drained (peers without backpressure hold seconds of it). */
export async function throughput (deployment: Deployment, drive: DriveArgs, args: BenchArgs, last = false): Promise<Throughput> {
  await deployment.drive(drive)
  await sleep(args.warmup * 1000)
  const before = await deployment.snapshot()
  const brokerBefore = brokerCpu(deployment.brokerPorts)
  await sleep(args.seconds * 1000)
  const after = await deployment.snapshot()
  const broker = brokerCpuBetween(brokerBefore, brokerCpu(deployment.brokerPorts))
  const published = await deployment.halt(!last)
  const failed = (await deployment.stats()).reduce((total, stats) => total + (stats.failed ?? 0), 0)
  const frames = after.events - before.events
  const percent = percentOf(after.at - before.at)
  return {
    framesPerSec: frames / ((after.at - before.at) / 1000),
    cpuPerFrame: frames === 0 ? NaN : (after.cpu - before.cpu) / frames,
    published,
    server: percent(after.cpu - before.cpu),
    generator: percent(after.generatorCpu - before.generatorCpu),
    broker: broker === undefined ? undefined : percent(broker),
    closed: after.closed,
    closeCodes: after.closeCodes,
    failed
  }
}

export interface RatePoint {
  /** Publish (intended time) to receipt at the clients, µs. */
  summary: LatencySummary
  /** Inside the server, from the bus handing it an event to the end of the socket writes for it, µs; undefined for a peer without the timer. */
  fanoutTime: LatencySummary | undefined
  framesPerSec: number
  /** Percent of one core over the measurement window. */
  server: number
  /** The RabbitMQ nodes the peer uses, added up (bench/lib/broker-cpu.ts). */
  broker: number | undefined
  generator: number
  /** Instance 1 alone, with several: it publishes nothing, so this is what it takes to receive. */
  receiver: number | undefined
}

/**
 * Publishes `rate` events/s (open loop, each event stamped with its intended
 * time) and reads latency, the servers' fan-out time and every process's CPU
 * over the measurement window.
 */
export async function fixedRate (deployment: Deployment, drive: DriveArgs & { rate: number }, warmup: number, seconds: number): Promise<RatePoint> {
  await deployment.drive(drive)
  await sleep(warmup * 1000)
  const before = await deployment.snapshot()
  const brokerBefore = brokerCpu(deployment.brokerPorts)
  await Promise.all([deployment.recordLatency(), deployment.recordFanout()])
  await sleep(seconds * 1000)
  const [summary, fanoutTime] = await Promise.all([deployment.latency(), deployment.fanoutTime()])
  const after = await deployment.snapshot()
  const broker = brokerCpuBetween(brokerBefore, brokerCpu(deployment.brokerPorts))
  await deployment.halt()
  const elapsedMs = after.at - before.at
  const percent = percentOf(elapsedMs)
  return {
    summary,
    fanoutTime,
    framesPerSec: (after.events - before.events) / elapsedMs * 1000,
    server: percent(after.cpu - before.cpu),
    broker: broker === undefined ? undefined : percent(broker),
    generator: percent(after.generatorCpu - before.generatorCpu),
    receiver: after.cpus.length > 1 ? percent(after.cpus[1]! - before.cpus[1]!) : undefined
  }
}

/** Drives `deployment` at a fixed rate for `seconds`, unmeasured, and waits for its frames: code run hot before a point that measures it. */
export async function warmUp (deployment: Deployment, drive: DriveArgs & { rate: number }, seconds: number): Promise<void> {
  await deployment.drive(drive)
  await sleep(seconds * 1000)
  await deployment.halt()
}
