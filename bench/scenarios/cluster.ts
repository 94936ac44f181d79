// The cluster beside the single node, in one run (issue 12): the plugin on
// two instances on the machine's own RabbitMQ node (evsock-amqp-x2) and on
// the local three-node cluster (evsock-cluster-x2: each instance on a node
// of its own, quorum instance queues), through the fan-out and fixed-rate
// machinery of the suite; what one node accepts with publisher confirms
// into each kind of queue the plugin declares; and how fast one node makes
// and removes an instance's bindings. Every ratio is cluster / single node,
// taken round by round. The cluster's nodes share this
// machine's 2 cores with everything else: the run measures what replication
// costs in CPU and latency, not what three machines would give.
import { setTimeout as sleep } from 'node:timers/promises'
import { connect } from 'amqplib'
import { brokerCpu, brokerCpuBetween } from '../lib/broker-cpu.js'
import { AMQP_URL, CLUSTER_URLS, portOf } from '../lib/config.js'
import { withPeers } from '../lib/deploy.js'
import { Disturbances } from '../lib/disturbances.js'
import { bindRate, type BindRate } from '../lib/bind-rate.js'
import { ingest, INGEST_WINDOW, type Ingest, type IngestTarget } from '../lib/ingest.js'
import { fanoutKey, type Cell, type Context, type ScenarioResult, type Table } from '../lib/results.js'
import { interleaved, median, mediansOf, ratios, spreadCell } from '../lib/sampled.js'
import type { PeerName } from '../lib/peers.js'
import type { RatePoint } from '../lib/measure.js'
import { measureSubs, type Measured } from './fanout.js'
import { generatorNote, measureRates, ms, type Point } from './latency.js'

const SINGLE: PeerName = 'evsock-amqp-x2'
const CLUSTER: PeerName = 'evsock-cluster-x2'
const PEERS: PeerName[] = [SINGLE, CLUSTER]
const SUBS = 1000
const SIZE = 128
const BURSTS = [1, 20]
/**
 * Fixed rates, subscribers never decreasing. 1,000 events/s to 1,000
 * subscribers is a million frames/s: measured only if the load generator
 * stays under its limit (bench/scenarios/latency.ts), which it does not on 2
 * cores; 10 events/s gives the 1,000-subscriber row instead.
 */
const RATES = [{ subs: 100, rate: 100 }, { subs: 1000, rate: 10 }, { subs: 1000, rate: 1000 }]
/** Broker ingest: warm-up and window, seconds (halved with --quick). */
const INGEST = { warmup: 0.5, seconds: 2 }

const [FIRST] = CLUSTER_URLS
/** One publisher on the cluster's first node, where the queue's (or stream's) leader is declared; its followers on the others. */
const TARGETS: IngestTarget[] = [
  { label: 'single node, classic instance queue', url: AMQP_URL, kind: 'classic', nodes: [AMQP_URL] },
  { label: 'single node, history stream', url: AMQP_URL, kind: 'stream', nodes: [AMQP_URL] },
  { label: 'cluster, quorum instance queue', url: FIRST!, kind: 'quorum', nodes: CLUSTER_URLS },
  { label: 'cluster, history stream (replicated)', url: FIRST!, kind: 'stream', nodes: CLUSTER_URLS },
  { label: 'cluster, classic queue (not replicated)', url: FIRST!, kind: 'classic', nodes: CLUSTER_URLS }
]
/** Each cluster target, and the single-node one it is held against. */
const AGAINST: Record<string, string> = {
  'cluster, quorum instance queue': 'single node, classic instance queue',
  'cluster, history stream (replicated)': 'single node, history stream',
  'cluster, classic queue (not replicated)': 'single node, classic instance queue'
}

/** Bindings made and removed per round (halved with --quick): per-user topics bind one key per user. */
const BINDINGS = 1000
/** The instance queue of each: classic on the single node, quorum on the cluster. */
const BIND_TARGETS = [TARGETS[0]!, TARGETS[2]!]

/** Fails early, with the way out, when a node of the cluster does not answer. */
async function requireCluster (): Promise<void> {
  for (const url of CLUSTER_URLS) {
    try {
      const connection = await connect(url, { timeout: 5000 })
      await connection.close()
    } catch (error) {
      throw new Error(`the cluster scenario needs the local three-node cluster: ${new URL(url).host} does not answer (${(error as Error).message}); ` +
        'start it with `bash scripts/rabbitmq-cluster.sh start`, or point AMQP_CLUSTER_URLS at another', { cause: error })
    }
  }
}

/** Attempts at one measurement, the first included. */
const ATTEMPTS = 3

interface Attempted<T> { result: T, disturbed: string[] }

/**
 * Runs `measure`, again (ATTEMPTS in all) while something disturbed the
 * nodes meanwhile: an alarm set off by a test on the shared node, a cluster
 * node stopped by a fault test (bench/lib/disturbances.ts). A measurement
 * that fails while disturbed is tried again too. The last attempt's result
 * stands, with what disturbed it.
 */
async function undisturbed<T> (watch: Disturbances, what: string, measure: () => Promise<T>): Promise<Attempted<T>> {
  for (let attempt = 1; ; attempt++) {
    const mark = watch.mark()
    let result: T
    try {
      result = await measure()
    } catch (error) {
      if (attempt === ATTEMPTS || watch.since(mark).length === 0) throw error
      continue
    }
    const disturbed = watch.since(mark)
    if (disturbed.length === 0 || attempt === ATTEMPTS) return { result, disturbed }
    console.error(`cluster: ${what} was disturbed (${disturbed.join('; ')}); measuring it again`)
  }
}

/** The note a table gets when its last attempt was disturbed all the same. */
const disturbedNote = (disturbed: string[]): string[] => disturbed.length === 0
  ? []
  : [`The last of ${ATTEMPTS} attempts was disturbed too; these rows include: ${disturbed.join('; ')}.`]

const withNotes = (table: Table, notes: string[]): Table => ({ ...table, notes: [...table.notes ?? [], ...notes] })

/** The nodes' CPU with nothing of the bench running, percent of one core over `seconds`: what the per-event figures include at low rates. */
async function atRest (urls: string[], seconds: number): Promise<string> {
  const ports = urls.map(portOf)
  const before = brokerCpu(ports)
  await sleep(seconds * 1000)
  const cpu = brokerCpuBetween(before, brokerCpu(ports))
  return cpu === undefined ? '-' : (cpu / seconds / 1e4).toFixed(1)
}

export async function cluster (context: Context): Promise<ScenarioResult> {
  await requireCluster()
  const watch = new Disturbances([AMQP_URL, ...CLUSTER_URLS])
  try {
    return await measureAll(context, watch)
  } finally {
    await watch.close()
  }
}

async function measureAll (context: Context, watch: Disturbances): Promise<ScenarioResult> {
  const { args } = context
  const sampled = `${mediansOf(args.rounds)}, single node and cluster in turn`
  const scale = args.quick ? 0.5 : 1
  const rest = `At rest, before the run (nothing of the bench running, ${2 * scale} s each), the single node used ${await atRest([AMQP_URL], 2 * scale)}% of a core ` +
    `(other tests share it) and the cluster's three nodes ${await atRest(CLUSTER_URLS, 2 * scale)}%: at low event rates that is most of the broker µs/event.`
  const fanout = await undisturbed(watch, 'fan-out', async () => {
    const measured: Measured = { frames: new Map(), points: new Map(), troubles: [] }
    await withPeers(PEERS, {}, (deployments) => measureSubs(context, SUBS, deployments, measured, [], BURSTS.map((burst) => ({ size: SIZE, burst }))))
    return fanoutTable(measured, sampled, rest)
  })
  const latency = await undisturbed(watch, 'latency', async () => {
    const { points, skipped } = await withPeers(PEERS, {}, (deployments) => measureRates(context, deployments, RATES))
    return latencyTable(points, sampled, [generatorNote(skipped), rest])
  })
  // Rounds of their own, each a few seconds: one disturbed round is measured again, not the whole table.
  const rounds = async <I extends { label: string }, T>(items: I[], measure: (item: I) => Promise<T>): Promise<{ samples: Map<string, T[]>, notes: string[] }> => {
    const attempted = await interleaved(items, args.rounds, (item) => item.label, (item) => undisturbed(watch, item.label, () => measure(item)))
    const samples = new Map([...attempted].map(([label, list]) => [label, list.map((a) => a.result)]))
    return { samples, notes: disturbedNote([...attempted.values()].flat().flatMap((a) => a.disturbed)) }
  }
  const ingested = await rounds(TARGETS, (t) => ingest(t, INGEST.warmup * scale, INGEST.seconds * scale))
  const count = Math.round(BINDINGS * scale)
  const bound = await rounds(BIND_TARGETS, (t) => bindRate(t, count))
  return {
    tables: [
      withNotes(fanout.result, disturbedNote(fanout.disturbed)),
      withNotes(latency.result, disturbedNote(latency.disturbed)),
      withNotes(ingestTable(ingested.samples, args.rounds), ingested.notes),
      withNotes(bindTable(bound.samples, count, args.rounds), bound.notes)
    ],
    targets: []
  }
}

/** Round by round, cluster / single of `read`, as a median and its spread. */
function ratioCells (single: number[] | undefined, cluster: number[] | undefined): Cell[] {
  if (single === undefined || cluster === undefined) return ['-', '-']
  const rounds = ratios(cluster, single)
  return [median(rounds).toFixed(2), spreadCell(rounds)]
}

function fanoutTable ({ frames, points, troubles }: Measured, sampled: string, rest: string): Table {
  const rows: Cell[][] = []
  for (const burst of BURSTS) {
    const key = (peer: string): string => fanoutKey(peer, SUBS, burst, SIZE)
    for (const peer of PEERS) {
      const own = frames.get(key(peer))
      const point = points.get(key(peer))
      if (own === undefined || point === undefined) continue
      // Every client holds the topic: an event is SUBS frames.
      const events = median(own) / SUBS
      rows.push([peer, SUBS, burst, Math.round(median(own)), spreadCell(own), Math.round(events), ...(peer === SINGLE ? ['', ''] : ratioCells(frames.get(key(SINGLE)), own)),
        point.cpuPerFrame.toFixed(2), point.broker?.toFixed(0) ?? '-', point.broker === undefined ? '-' : (point.broker * 1e4 / events).toFixed(0)])
    }
  }
  return {
    title: `Cluster: fan-out, one topic, every client subscribed (${SIZE} B; two instances, ${SINGLE} on the single node against ${CLUSTER}; ${sampled})`,
    notes: ['Frames/s counted at the clients, events/s = frames/s / subscribers; server µs/frame is the two instances\' CPU per frame received; broker CPU adds up the node, or the cluster\'s three, ' +
      'and broker µs/event is that CPU per event published (each lands in both instance queues, and on the cluster in their replicas). Spread: (max - min) / median of the rounds, percent; the ratio is the cluster\'s frames/s over the single node\'s, round by round.', rest, ...troubles],
    columns: ['peer', 'subs', 'burst', 'frames/s', 'spread %', 'events/s', 'cluster / single', 'spread %', 'server µs/frame', 'broker CPU %', 'broker µs/event'],
    rows
  }
}

function latencyTable (points: Point[], sampled: string, notes: string[]): Table {
  const rows: Cell[][] = []
  const read = (samples: RatePoint[] | undefined, value: (s: RatePoint) => number | undefined): number[] | undefined =>
    samples?.map((s) => value(s) ?? NaN)
  for (const { subs, rate, rounds } of points) {
    for (const peer of PEERS) {
      const samples = rounds.get(peer)!
      const cell = (value: (s: RatePoint) => number | undefined, format: (v: number) => string): string => {
        const values = read(samples, value)!
        return values.some(Number.isNaN) ? '-' : format(median(values))
      }
      const versus = (value: (s: RatePoint) => number): Cell[] => peer === SINGLE ? ['', ''] : ratioCells(read(rounds.get(SINGLE), value), read(samples, value))
      rows.push([peer, subs, rate, cell((s) => s.framesPerSec, (v) => String(Math.round(v))), cell((s) => s.summary.p50, ms), cell((s) => s.summary.p99, ms),
        cell((s) => s.summary.p999, ms), cell((s) => s.summary.max, ms), ...versus((s) => s.summary.p50), ...versus((s) => s.summary.p99),
        cell((s) => s.server, (v) => v.toFixed(1)), cell((s) => s.broker, (v) => v.toFixed(1)),
        // Percent of a core over events/s: µs of broker CPU per event (for every instance queue it lands in, and its replicas).
        cell((s) => s.broker === undefined ? undefined : s.broker * 1e4 / rate, (v) => v.toFixed(0)), cell((s) => s.generator, (v) => v.toFixed(1))])
    }
  }
  return {
    title: `Cluster: latency at fixed rates, publish to receipt (open loop, ${SIZE} B; ${sampled}; CPU in % of one core)`,
    notes: [...notes, 'Broker CPU: the node the peer uses, or the three nodes of the cluster added up; broker µs/event is that CPU per event published (each lands in both instances\' queues, and on the cluster in their replicas). ' +
      'The ratios are the cluster\'s percentile over the single node\'s, round by round (median, spread %).'],
    columns: ['peer', 'subs', 'events/s', 'frames/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'p50 cluster / single', 'spread %', 'p99 cluster / single', 'spread %',
      'server CPU %', 'broker CPU %', 'broker µs/event', 'generator CPU %'],
    rows
  }
}

function ingestTable (ingested: Map<string, Ingest[]>, rounds: number): Table {
  const rows: Cell[][] = TARGETS.map(({ label }) => {
    const own = ingested.get(label)!
    const perSec = own.map((s) => s.perSec)
    const broker = own.some((s) => s.broker === undefined) ? undefined : median(own.map((s) => s.broker!))
    const against = AGAINST[label]
    return [label, Math.round(median(perSec)), spreadCell(perSec), ...(against === undefined ? ['', ''] : ratioCells(ingested.get(against)!.map((s) => s.perSec), perSec)),
      broker === undefined ? '-' : broker.toFixed(0), broker === undefined ? '-' : (broker * 1e4 / median(perSec)).toFixed(1),
      median(own.map((s) => s.publisher)).toFixed(0), Math.max(...own.map((s) => s.failed))]
  })
  return {
    title: `Cluster: events/s one node accepts with publisher confirms (${SIZE} B, through the plugin's publisher, at most ${INGEST_WINDOW.toLocaleString('en-US')} awaiting their confirm; ${mediansOf(rounds)}, targets in turn; CPU in % of one core)`,
    notes: [
      'One publisher connection to one node (on the cluster, its first: the queue\'s or stream\'s leader is declared there, its followers on the other two), into one queue bound \'#\' that nobody consumes; ' +
        'the plugin\'s own declarations (lib/bus/amqp-bindings.ts, lib/bus/amqp-stream.ts). Broker CPU adds up every node that works for it; broker µs/event is that CPU per event confirmed. ' +
        '"vs single node": the cluster\'s rate over the single node\'s same kind of queue (the quorum queue over the classic instance queue it replaces), round by round.'
    ],
    columns: ['node and queue', 'events/s confirmed', 'spread %', 'vs single node', 'spread %', 'broker CPU %', 'broker µs/event', 'publisher CPU %', 'failed'],
    rows
  }
}

function bindTable (bound: Map<string, BindRate[]>, count: number, rounds: number): Table {
  const [single, cluster] = BIND_TARGETS.map(({ label }) => bound.get(label)!)
  const rows: Cell[][] = BIND_TARGETS.map(({ label }) => {
    const own = bound.get(label)!
    const isCluster = own === cluster
    const perBinding = own.some((s) => s.brokerPerBinding === undefined) ? '-' : median(own.map((s) => s.brokerPerBinding!)).toFixed(0)
    const versus = (read: (s: BindRate) => number): Cell[] => isCluster ? ratioCells(single!.map(read), own.map(read)) : ['', '']
    return [label, count, Math.round(median(own.map((s) => s.binds))), spreadCell(own.map((s) => s.binds)), ...versus((s) => s.binds),
      Math.round(median(own.map((s) => s.unbinds))), spreadCell(own.map((s) => s.unbinds)), ...versus((s) => s.unbinds), perBinding]
  })
  return {
    title: `Cluster: bindings one node makes and removes for an instance (${count.toLocaleString('en-US')} keys, one per user; ${mediansOf(rounds)}, targets in turn)`,
    notes: ['Through the plugin\'s own Bindings (lib/bus/amqp-bindings.ts): every key asked at once, sent one RPC at a time, each awaited, as an instance does when its clients subscribe. ' +
      'Broker µs per binding: the CPU of every node (the cluster\'s three added up) per key bound and unbound.'],
    columns: ['node and queue', 'keys', 'binds/s', 'spread %', 'cluster / single', 'spread %', 'unbinds/s', 'spread %', 'cluster / single', 'spread %', 'broker µs per binding'],
    rows
  }
}
