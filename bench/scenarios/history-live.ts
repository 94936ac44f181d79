// What the `history` option costs the live path, each variant beside its own
// baseline in the same run: on the in-process bus, off and on; on RabbitMQ,
// off, on (design A: every instance reads the stream and keeps what its
// patterns match), and design B's live path (today's routed path, plus a
// stream bound '#' that the broker writes every event to and nobody reads
// until a client resumes).
import { BenchExchange } from '../lib/amqp-topology.js'
import { FANOUT_TOPIC } from '../lib/config.js'
import { Deployment } from '../lib/deploy.js'
import { fixedRate, throughput, type RatePoint } from '../lib/measure.js'
import { interleaved, medians } from '../lib/sampled.js'
import type { PeerName } from '../lib/peers.js'
import { peersOf, type Cell, type Context, type Table } from '../lib/results.js'
import { ackEvery } from './fanout.js'
import { ms } from './latency.js'

const SIZE = 128
const FANOUT_SUBS = 1000
const BURSTS = [1, 20]
/** Samples of each point per variant (one with --quick); the tables give their medians. */
const ROUNDS = 2
/**
 * The fixed-rate points, by subscribers: 100,000 frames/s each, the costs
 * per event weighing most in the first, those per frame in the second.
 * 1,000 events/s to 1,000 subscribers (a million frames/s) is past what one
 * core fans out one event at a time (the fan-out table's burst 1): it would
 * measure a backlog.
 */
const POINTS = [{ subs: 100, rates: [1000] }, { subs: FANOUT_SUBS, rates: [100] }]
/**
 * Events to a topic no connection holds. With history on, RabbitMQ sends each
 * instance every event and the instance drops what no local pattern matches;
 * without it (and in design B) the broker drops them: this is the price of A
 * for events an instance has no client for.
 */
const UNWANTED = { topic: 'bench.unwanted', rate: 2000 }

interface Variant {
  label: string
  peer: PeerName
  history: boolean
  /** History off, with a stream bound '#' that nobody reads (design B's live path). */
  unreadStream?: boolean
  /** The variant this one is compared with. */
  baseline?: string
}

const VARIANTS: Variant[] = [
  { label: 'memory, off', peer: 'evsock-memory', history: false },
  { label: 'memory, on', peer: 'evsock-memory', history: true, baseline: 'memory, off' },
  { label: 'amqp-x2, off', peer: 'evsock-amqp-x2', history: false },
  { label: 'amqp-x2, on (A)', peer: 'evsock-amqp-x2', history: true, baseline: 'amqp-x2, off' },
  { label: 'amqp-x2, off + unread stream (B)', peer: 'evsock-amqp-x2', history: false, unreadStream: true, baseline: 'amqp-x2, off' }
]

interface FanoutPoint { framesPerSec: number, cpuPerFrame: number }

interface Measured { fanout: Map<number, FanoutPoint>, rates: Map<string, RatePoint>, unwanted?: RatePoint }

const rateKey = (subs: number, rate: number): string => `${subs}/${rate}`

interface Running {
  variant: Variant
  deployment: Deployment
  exchange: BenchExchange | undefined
}

/** Starts every variant at once: the rounds then take turns on them, so that the machine's load drifting during the run favours none. */
async function startAll (variants: Variant[]): Promise<Running[]> {
  const started = await Promise.allSettled(variants.map(async (variant): Promise<Running> => {
    const exchange = variant.peer === 'evsock-memory' ? undefined : await BenchExchange.create(variant.unreadStream === true)
    const options = { history: variant.history, ...(exchange === undefined ? {} : { exchange: exchange.name }) }
    const deployment = await Deployment.start(variant.peer, options).catch(async (err: unknown) => {
      await exchange?.delete()
      throw err
    })
    return { variant, exchange, deployment }
  }))
  const running = started.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
  const failed = started.find((result) => result.status === 'rejected')
  if (failed !== undefined) {
    await stopAll(running)
    throw failed.reason
  }
  return running
}

async function stopAll (running: Running[]): Promise<void> {
  for (const { deployment, exchange } of running) {
    await deployment.stop()
    await exchange?.delete()
  }
}

async function fanoutPoint (deployment: Deployment, burst: number, args: Context['args']): Promise<FanoutPoint> {
  const { framesPerSec, cpuPerFrame } = await throughput(deployment, { burst, size: SIZE, topic: FANOUT_TOPIC }, args)
  return { framesPerSec, cpuPerFrame }
}

async function measureAll (context: Context, running: Running[]): Promise<Map<string, Measured>> {
  const { args } = context
  const count = args.quick ? 1 : ROUNDS
  // The rounds share the measurement time a single run would have had.
  const seconds = Math.max(0.5, args.latencySeconds / (args.quick ? 2 : ROUNDS))
  const results = new Map<string, Measured>(running.map(({ variant }) => [variant.label, { fanout: new Map(), rates: new Map() }]))
  const keep = <T>(samples: Map<string, T[]>, put: (measured: Measured, value: T) => void): void => {
    for (const [label, values] of samples) put(results.get(label)!, medians(values as object[]) as T)
  }
  let connected = 0
  const connectAll = async (subs: number): Promise<void> => {
    await Promise.all(running.map(({ deployment }) => deployment.connect(subs - connected, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })))
    connected = subs
  }
  const rounds = <T>(sample: (deployment: Deployment) => Promise<T>): Promise<Map<string, T[]>> =>
    interleaved(running, count, ({ variant }) => variant.label, ({ deployment }) => sample(deployment))
  const unwanted = await rounds((deployment) => fixedRate(deployment, { rate: UNWANTED.rate, size: SIZE, topic: UNWANTED.topic }, args.warmup, seconds))
  keep(unwanted, (measured, point: RatePoint) => { measured.unwanted = point })
  for (const { subs, rates } of POINTS) {
    await connectAll(subs)
    for (const rate of rates) {
      const samples = await rounds((deployment) => fixedRate(deployment, { rate, size: SIZE, topic: FANOUT_TOPIC }, args.warmup, seconds))
      keep(samples, (measured, point: RatePoint) => measured.rates.set(rateKey(subs, rate), point))
    }
  }
  await connectAll(FANOUT_SUBS)
  for (const burst of BURSTS) {
    const samples = await rounds((deployment) => fanoutPoint(deployment, burst, args))
    keep(samples, (measured, point: FanoutPoint) => measured.fanout.set(burst, point))
  }
  return results
}

const ratio = (value: number, baseline: number | undefined): string => baseline === undefined ? '' : (value / baseline).toFixed(2)
const fixed = (value: number | undefined, digits: number): string => value === undefined ? '-' : value.toFixed(digits)

export async function historyLive (context: Context): Promise<Table[]> {
  const sampled = context.args.quick ? 'one round' : `medians of ${ROUNDS} rounds, variants in turn`
  const peers = peersOf(context, [...new Set(VARIANTS.map((v) => v.peer))])
  const variants = VARIANTS.filter((v) => peers.includes(v.peer))
  const running = await startAll(variants)
  let results: Map<string, Measured>
  try {
    results = await measureAll(context, running)
  } finally {
    await stopAll(running)
  }
  const fanoutRows: Cell[][] = []
  const rateRows: Cell[][] = []
  const unwantedRows: Cell[][] = []
  for (const variant of variants) {
    const own = results.get(variant.label)!
    const base = variant.baseline === undefined ? undefined : results.get(variant.baseline)
    const shared = variant.peer !== 'evsock-memory'
    const unwanted = own.unwanted
    if (unwanted !== undefined) {
      unwantedRows.push([variant.label, UNWANTED.rate, unwanted.server.toFixed(1), ratio(unwanted.server, base?.unwanted?.server),
        fixed(unwanted.receiver, 1), shared ? fixed(unwanted.broker, 1) : '-'])
    }
    for (const [burst, point] of own.fanout) {
      const was = base?.fanout.get(burst)
      fanoutRows.push([variant.label, burst, Math.round(point.framesPerSec), ratio(point.framesPerSec, was?.framesPerSec),
        point.cpuPerFrame.toFixed(2), ratio(point.cpuPerFrame, was?.cpuPerFrame)])
    }
    for (const [key, point] of own.rates) {
      const [subs, rate] = key.split('/').map(Number) as [number, number]
      const was = base?.rates.get(key)
      const { p50, p99, p999, max } = point.summary
      rateRows.push([variant.label, subs, rate, Math.round(point.framesPerSec), ms(p50), ms(p99), ms(p999), ms(max), ratio(p99, was?.summary.p99),
        point.server.toFixed(1), ratio(point.server, was?.server), shared ? fixed(point.broker, 1) : '-', point.generator.toFixed(1)])
    }
  }
  return [
    {
      title: `History, live path: fan-out (${FANOUT_SUBS.toLocaleString('en-US')} subscribers, ${SIZE} B; ${sampled}; ratios against history off)`,
      columns: ['variant', 'burst', 'frames/s', 'vs off', 'server µs/frame', 'vs off'],
      rows: fanoutRows
    },
    {
      title: `History, live path: latency at fixed rates (${SIZE} B, publish to receipt; ${sampled}; CPU in % of one core)`,
      columns: ['variant', 'subs', 'events/s', 'frames/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'p99 vs off', 'server CPU %', 'vs off', 'broker CPU %', 'generator CPU %'],
      rows: rateRows
    },
    {
      title: `History, live path: events no connection wants (${UNWANTED.rate.toLocaleString('en-US')} events/s to a topic nobody holds, ${SIZE} B; ${sampled}; ` +
        'server CPU includes instance 0 publishing them; instance 1 only receives)',
      columns: ['variant', 'events/s', 'server CPU %', 'vs off', 'instance 1 CPU %', 'broker CPU %'],
      rows: unwantedRows
    }
  ]
}
