// A server process: one instance of one peer, plus the driver that publishes
// into it (instance 0 only), and its own CPU and memory readings, taken
// inside the process so they are the server's alone.
import { setTimeout as sleep } from 'node:timers/promises'
import { serve } from '../lib/rpc.js'
import { eventData, nowNs } from '../lib/payload.js'
import type { Peer, PeerOptions } from './peer.js'

export type PeerModule = 'ws' | 'socketio' | 'evsock' | 'fastify-ws'

export interface DriveArgs {
  /** Events per tick, as fast as the peer takes them (throughput runs). */
  burst?: number
  /** Events per second at fixed intervals, whatever the peer does (open-loop latency runs). */
  rate?: number
  /** JSON size of each event's data. */
  size: number
  /** The topic, or with `users` the prefix of `<prefix>.<random user>`. */
  topic: string
  users?: number
}

/** Events per turn when filling a history. */
const FILL_BURST = 100

let peer: Peer | undefined
let driving = false
let published = 0

const started = (): Peer => {
  if (peer === undefined) throw new Error('no peer started')
  return peer
}

function topicOf (args: DriveArgs): string {
  return args.users === undefined ? args.topic : `${args.topic}.${Math.floor(Math.random() * args.users)}`
}

/**
 * Events in transit through the broker at most, in a fan-out: without the
 * bound, a broker that fell behind (busy after a test run, say) held a backlog
 * that reached every socket at once, past the plugin's pending bound (1,024
 * events), and the plugin cut every client with 4008: two full runs measured
 * 0 frames/s so. Half that bound, and hundreds of milliseconds of events.
 */
const MAX_IN_TRANSIT = 512

function driveBursts (target: Peer, publish: NonNullable<Peer['publish']>, args: DriveArgs & { burst: number }): void {
  // Every instance holds the one topic, so this one receives each event it publishes.
  const boundTransit = args.users === undefined && target.inTransit !== undefined
  const start = target.inTransit?.() ?? 0
  const tick = (): void => {
    if (!driving) return
    // A peer with a backlog gets a millisecond, not a spinning loop that would bill its CPU.
    if (target.busy() || (boundTransit && target.inTransit!() - start > MAX_IN_TRANSIT)) {
      setTimeout(tick, 1)
      return
    }
    for (let i = 0; i < args.burst; i++) publish(topicOf(args), eventData(args.size))
    published += args.burst
    setImmediate(tick)
  }
  tick()
}

function driveRate (publish: NonNullable<Peer['publish']>, args: DriveArgs & { rate: number }): void {
  const interval = 1e9 / args.rate
  let due = nowNs()
  const tick = (): void => {
    if (!driving) return
    // Each event is stamped with its intended time, so a stall shows as latency (no coordinated omission).
    for (const now = nowNs(); due <= now; due += interval) {
      publish(topicOf(args), eventData(args.size, Math.round(due)))
      published++
    }
    setTimeout(tick, 1)
  }
  tick()
}

serve({
  async start ({ module, options }: { module: PeerModule, options: PeerOptions }) {
    const loaded = await import(`./peers/${module}.js`) as { start: (options: PeerOptions) => Promise<Peer> }
    peer = await loaded.start(options)
    return peer.port
  },

  drive (args: DriveArgs) {
    const target = started()
    const publish = target.publish
    if (publish === undefined) throw new Error('this peer does not publish')
    driving = true
    published = 0
    if (args.rate !== undefined) driveRate(publish, { ...args, rate: args.rate })
    else driveBursts(target, publish, { ...args, burst: args.burst ?? 1 })
    return null
  },

  /** Publishes `count` events as fast as the peer takes them, and resolves once the bus has them all (history runs fill the history so). */
  async fill ({ count, size, topic }: { count: number, size: number, topic: string }) {
    const target = started()
    const publish = target.publish
    if (publish === undefined) throw new Error('this peer does not publish')
    for (let done = 0; done < count;) {
      if (target.busy()) {
        await sleep(1)
        continue
      }
      const burst = Math.min(FILL_BURST, count - done)
      for (let i = 0; i < burst; i++) publish(topic, eventData(size))
      done += burst
      await new Promise(setImmediate)
    }
    await target.settled?.()
    return count
  },

  halt () {
    driving = false
    return published
  },

  busy: () => started().busy(),

  /** CPU time of this process so far, microseconds. */
  cpu () {
    const { user, system } = process.cpuUsage()
    return user + system
  },

  /** Heap and RSS after full collections, bytes. */
  memory () {
    for (let i = 0; i < 3; i++) globalThis.gc?.()
    const { heapUsed, rss } = process.memoryUsage()
    return { heap: heapUsed, rss }
  },

  stats: () => started().stats(),

  /** Starts a measurement window of the fan-out timer (null: this peer has none). */
  recordFanout () {
    started().fanout?.reset()
    return null
  },

  /** The fan-out times since `recordFanout`, µs; undefined for a peer without the timer. */
  fanoutTime: () => started().fanout?.summary(),

  async stop () {
    driving = false
    await peer?.close()
    peer = undefined
    return null
  }
})
