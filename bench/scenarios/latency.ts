// Scenario 2: one-way latency at fixed event rates, the same for every peer,
// publish (intended time, open loop) to receipt; the cost of the broker hop
// (RabbitMQ against the in-process bus, Socket.IO's Redis adapter against its
// in-memory one, one instance each); and the servers' own fan-out time,
// inside the server, from an event's arrival off the bus to its last socket
// write, against bare ws writing pre-framed buffers.
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeers, type Deployment } from '../lib/deploy.js'
import { fixedRate, warmUp, type RatePoint } from '../lib/measure.js'
import { atMost, headline, peersOf, type Cell, type Context, type ScenarioResult, type Table, type Target } from '../lib/results.js'
import { interleaved, median, mediansOf, ratios, roundsSpread, spreadCell } from '../lib/sampled.js'
import type { PeerName } from '../lib/peers.js'
import { ackEvery } from './fanout.js'

const PEERS: PeerName[] = ['ws-naive', 'socket.io', 'socket.io-redis', 'evsock-memory', 'evsock-amqp']
/** Subscribers of the fixed-rate points, fewest first: connections are added, never closed, between them. */
const SUBS = [100, 1000]
const SIZE = 128
/**
 * A point is measured only while the load generator would stay under this
 * share of its core (percent): beyond it, the clients reading their frames
 * queue them, and the latency measured is the generator's.
 */
const GENERATOR_LIMIT = 50
/**
 * The generator's CPU per frame is estimated from points of at least this
 * many frames/s, and only such points are left out; a lighter one is always
 * measured. Below it the generator's fixed costs dominate: at 1,000 frames/s
 * a peer's generator read 22 to 69 µs a frame across runs, 8 to 9 at 10,000;
 * estimated from the former, 100 events/s to 100 subscribers (every run has
 * measured it under 15%) was left out at a predicted 64 to 69%.
 */
const ESTIMATE_FROM_FRAMES = 5000
/** The broker hops: the peer with a broker, and the same server in memory. */
const HOPS: Array<[string, PeerName, PeerName]> = [['evsock', 'evsock-amqp', 'evsock-memory'], ['Socket.IO', 'socket.io-redis', 'socket.io']]
/** The target point of the broker hop (issue 14). */
const HOP_TARGET = { subs: 100, rate: 100, p50: 1, p99: 3 }
const FANOUT_TARGET = 1.2
/**
 * Before the points of a subscriber count, every deployment is driven for
 * WARM_SECONDS at WARM_FRAMES frames/s. A point's own warm-up (--warmup) is
 * one or two events at 10 events/s: measured without this, a fresh server's
 * first hundred events ran its code unoptimised (the plugin's per-socket
 * delivery took 8 µs a socket for its first 60 events, 0.4 µs after), which
 * made the first point's fan-out time a measure of V8's compiler.
 */
const WARM_SECONDS = 1
const WARM_FRAMES = 10_000

export const ms = (us: number): string => (us / 1000).toFixed(2)

export interface Point { subs: number, rate: number, rounds: Map<string, RatePoint[]> }
export interface Skipped { subs: number, rate: number, predicted: number }

/** The suite's points: every rate at each subscriber count, fewest subscribers first. */
const gridOf = (context: Context): Array<{ subs: number, rate: number }> =>
  SUBS.flatMap((subs) => [...context.args.rates].sort((a, b) => a - b).map((rate) => ({ subs, rate })))

/**
 * Measures `grid` (subscriber counts never decreasing: connections are added,
 * never closed, between points) on every deployment in turn, skipping the
 * points where the load generator would pass GENERATOR_LIMIT.
 */
export async function measureRates (context: Context, deployments: Deployment[], grid = gridOf(context)): Promise<{ points: Point[], skipped: Skipped[] }> {
  const { args } = context
  const points: Point[] = []
  const skipped: Skipped[] = []
  /** Generator CPU per frame (µs) at the last point of ESTIMATE_FROM_FRAMES or more measured (the busiest so far, in the suite's order), the worst peer: the estimate for the next; 0 (measure) before one. */
  let generatorPerFrame = 0
  let connected = 0
  for (const { subs, rate } of grid) {
    if (subs > connected) {
      for (const deployment of deployments) await deployment.connect(subs - connected, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })
      connected = subs
      const warm = { rate: Math.max(1, Math.round(WARM_FRAMES / subs)), size: SIZE, topic: FANOUT_TOPIC }
      for (const deployment of deployments) await warmUp(deployment, warm, WARM_SECONDS)
    }
    const estimable = rate * subs >= ESTIMATE_FROM_FRAMES
    // µs per frame times frames per second, over 10^4: percent of one core.
    const predicted = generatorPerFrame * rate * subs / 1e4
    if (estimable && predicted > GENERATOR_LIMIT) {
      skipped.push({ subs, rate, predicted })
      continue
    }
    const rounds = await interleaved(deployments, args.rounds, (d) => d.name,
      (d) => fixedRate(d, { rate, size: SIZE, topic: FANOUT_TOPIC }, args.warmup, args.latencySeconds))
    points.push({ subs, rate, rounds })
    if (estimable) {
      generatorPerFrame = Math.max(...[...rounds.values()].map((samples) => median(samples.map((s) => s.generator * 1e4 / Math.max(1, s.framesPerSec)))))
    }
  }
  return { points, skipped }
}

/** The note every fixed-rate table carries: the generator's limit, and the points it ruled out. */
export function generatorNote (skipped: Skipped[]): string {
  return `Each point is measured only if the load generator would stay under ${GENERATOR_LIMIT}% of its core (estimated from the busiest point before it of at least ${ESTIMATE_FROM_FRAMES.toLocaleString('en-US')} frames/s; a lighter point is always measured); its measured CPU is in the last column.` +
    (skipped.length === 0 ? '' : ` Not measured: ${skipped.map((s) => `${s.rate.toLocaleString('en-US')} events/s to ${s.subs.toLocaleString('en-US')} (generator at about ${s.predicted.toFixed(0)}%)`).join('; ')}.`)
}

export async function latency (context: Context): Promise<ScenarioResult> {
  const peers = peersOf(context, PEERS)
  const { points, skipped } = await withPeers(peers, { timeFanout: true }, (deployments) => measureRates(context, deployments))
  const sampled = `${mediansOf(context.args.rounds)}, peers in turn`
  const notes = [generatorNote(skipped)]
  return {
    tables: [latencyTable(points, peers, sampled, notes), hopTable(points, sampled), fanoutTable(points, peers, sampled)].filter((table) => table.rows.length > 0),
    targets: [...hopTargets(points), ...fanoutTargets(points)]
  }
}

const medianOf = (samples: RatePoint[], read: (point: RatePoint) => number): number => median(samples.map(read))

function latencyTable (points: Point[], peers: PeerName[], sampled: string, notes: string[]): Table {
  const rows: Cell[][] = []
  for (const { subs, rate, rounds } of points) {
    for (const peer of peers) {
      const samples = rounds.get(peer)!
      const p99 = samples.map((s) => s.summary.p99)
      rows.push([peer, subs, rate, Math.round(medianOf(samples, (s) => s.framesPerSec)), ms(medianOf(samples, (s) => s.summary.p50)), ms(median(p99)),
        ms(medianOf(samples, (s) => s.summary.p999)), ms(medianOf(samples, (s) => s.summary.max)), spreadCell(p99),
        medianOf(samples, (s) => s.server).toFixed(1), medianOf(samples, (s) => s.generator).toFixed(1)])
    }
  }
  return {
    title: `Latency at fixed rates, publish to receipt (open loop, ${SIZE} B; ${sampled}; CPU in % of one core)`,
    notes,
    columns: ['peer', 'subs', 'events/s', 'frames/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'p99 spread %', 'server CPU %', 'generator CPU %'],
    rows
  }
}

/** Round by round, the broker peer's percentile less the in-memory one's, ms. */
function added (point: Point, broker: PeerName, memory: PeerName, read: (p: RatePoint) => number): number[] | undefined {
  const a = point.rounds.get(broker)
  const b = point.rounds.get(memory)
  return a === undefined || b === undefined ? undefined : a.map((s, i) => (read(s) - read(b[i]!)) / 1000)
}

const range = (values: number[]): string => values.length < 2 ? '-' : `${Math.min(...values).toFixed(2)} to ${Math.max(...values).toFixed(2)}`

function hopTable (points: Point[], sampled: string): Table {
  const rows: Cell[][] = []
  for (const point of points) {
    for (const [label, broker, memory] of HOPS) {
      const p50 = added(point, broker, memory, (s) => s.summary.p50)
      const p99 = added(point, broker, memory, (s) => s.summary.p99)
      if (p50 === undefined || p99 === undefined) continue
      rows.push([label, `${broker} - ${memory}`, point.subs, point.rate, median(p50).toFixed(2), range(p50), median(p99).toFixed(2), range(p99)])
    }
  }
  return {
    title: `Broker hop: latency added by the broker, one instance each (${sampled}; each round's difference, then their median)`,
    columns: ['server', 'peers', 'subs', 'events/s', 'p50 added ms', 'rounds', 'p99 added ms', 'rounds'],
    rows
  }
}

function hopTargets (points: Point[]): Target[] {
  const point = points.find((p) => p.subs === HOP_TARGET.subs && p.rate === HOP_TARGET.rate)
  const [, broker, memory] = HOPS[0]!
  const p50 = point === undefined ? undefined : added(point, broker, memory, (s) => s.summary.p50)
  const p99 = point === undefined ? undefined : added(point, broker, memory, (s) => s.summary.p99)
  if (p50 === undefined || p99 === undefined) return []
  const where = `${HOP_TARGET.rate} events/s x ${HOP_TARGET.subs} subscribers`
  return [
    atMost(`broker hop: p50 ms added by RabbitMQ (${broker} - ${memory}), ${where}`, median(p50), HOP_TARGET.p50, `rounds ${range(p50)}`),
    atMost(`broker hop: p99 ms added by RabbitMQ (${broker} - ${memory}), ${where}`, median(p99), HOP_TARGET.p99, `rounds ${range(p99)}`)
  ]
}

/** Each round's median fan-out time per subscriber, µs; undefined for a peer without the timer. */
function perSubscriber (point: Point, peer: string): number[] | undefined {
  const samples = point.rounds.get(peer)
  if (samples === undefined || samples.some((s) => s.fanoutTime === undefined)) return undefined
  return samples.map((s) => s.fanoutTime!.p50 / point.subs)
}

function fanoutTable (points: Point[], peers: PeerName[], sampled: string): Table {
  const rows: Cell[][] = []
  for (const point of points) {
    const ws = perSubscriber(point, 'ws-naive')
    for (const peer of peers) {
      const own = perSubscriber(point, peer)
      if (own === undefined) continue
      const samples = point.rounds.get(peer)!
      const vsWs = ws === undefined || peer === 'ws-naive' ? undefined : ratios(own, ws)
      rows.push([peer, point.subs, point.rate, medianOf(samples, (s) => s.fanoutTime!.count), medianOf(samples, (s) => s.fanoutTime!.p50).toFixed(0),
        medianOf(samples, (s) => s.fanoutTime!.p99).toFixed(0), medianOf(samples, (s) => s.fanoutTime!.max).toFixed(0), median(own).toFixed(2),
        vsWs === undefined ? '' : median(vsWs).toFixed(2), vsWs === undefined ? '' : spreadCell(vsWs)])
    }
  }
  return {
    title: `Server-side fan-out time, bus receipt to the last socket write of an event (the plugin's evsock_delivery_seconds; bare ws timed around its write loop; ${sampled})`,
    notes: ['Per subscriber: the median fan-out time over the subscribers; "vs bare ws" is its ratio to bare ws writing one pre-framed buffer per socket, round by round.'],
    columns: ['peer', 'subs', 'events/s', 'events timed', 'p50 µs', 'p99 µs', 'max µs', 'p50 µs per subscriber', 'vs bare ws', 'spread %'],
    rows
  }
}

function fanoutTargets (points: Point[]): Target[] {
  const out: Target[] = []
  for (const point of points) {
    const ws = perSubscriber(point, 'ws-naive')
    const own = perSubscriber(point, 'evsock-memory')
    if (ws === undefined || own === undefined) continue
    const rounds = ratios(own, ws)
    out.push(headline(atMost(`server-side fan-out time per subscriber, evsock-memory / bare ws, ${point.rate} events/s x ${point.subs} subscribers`,
      median(rounds), FANOUT_TARGET, undefined, roundsSpread(rounds))))
  }
  return out
}
