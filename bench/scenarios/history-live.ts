// What the `history` option costs the live path, each variant beside its own
// baseline in the same run: on the in-process bus, off and on; on RabbitMQ,
// off, on (design A: every instance reads the stream and keeps what its
// patterns match), and design B's live path (today's routed path, plus a
// stream bound '#' that the broker writes every event to and nobody reads
// until a client resumes).
import { setTimeout as sleep } from 'node:timers/promises'
import { withExchange } from '../lib/amqp-topology.js'
import { brokerCpu } from '../lib/broker-cpu.js'
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer, type Deployment } from '../lib/deploy.js'
import { throughput } from '../lib/measure.js'
import type { LatencySummary } from '../lib/hist.js'
import type { PeerName } from '../lib/peers.js'
import type { Cell, Context, Table } from '../lib/results.js'
import { ackEvery } from './fanout.js'
import { ms } from './latency.js'

const SIZE = 128
const FANOUT_SUBS = 1000
const BURSTS = [1, 20]
/**
 * The fixed-rate points, by subscribers. 1,000 events/s to 1,000
 * subscribers (a million frames/s) is past what one core fans out one event
 * at a time (the fan-out table's burst 1), so it would measure a backlog.
 */
const POINTS = [{ subs: 100, rates: [100, 1000] }, { subs: FANOUT_SUBS, rates: [100] }]

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

interface FanoutPoint { framesPerSec: number, cpuPerFrame: number, brokerPerEvent: number | undefined }

interface RatePoint {
  summary: LatencySummary
  framesPerSec: number
  /** Percent of one core over the measurement window. */
  server: number
  broker: number | undefined
  generator: number
}

interface Measured { fanout: Map<number, FanoutPoint>, rates: Map<string, RatePoint> }

const rateKey = (subs: number, rate: number): string => `${subs}/${rate}`
const delta = (after: number | undefined, before: number | undefined): number | undefined =>
  after === undefined || before === undefined ? undefined : after - before

/** Publishes `rate` events/s and reads latency and every process's CPU over the measurement window. */
async function fixedRate (deployment: Deployment, rate: number, warmup: number, seconds: number): Promise<RatePoint> {
  await deployment.drive({ rate, size: SIZE, topic: FANOUT_TOPIC })
  await sleep(warmup * 1000)
  const before = await deployment.snapshot()
  const brokerBefore = brokerCpu()
  await deployment.recordLatency()
  await sleep(seconds * 1000)
  const summary = await deployment.latency()
  const after = await deployment.snapshot()
  const broker = delta(brokerCpu(), brokerBefore)
  await deployment.halt()
  const elapsedMs = after.at - before.at
  // Microseconds of CPU per millisecond, over ten: percent of one core.
  const percent = (us: number): number => us / elapsedMs / 10
  return {
    summary,
    framesPerSec: (after.events - before.events) / elapsedMs * 1000,
    server: percent(after.cpu - before.cpu),
    broker: broker === undefined ? undefined : percent(broker),
    generator: percent(after.generatorCpu - before.generatorCpu)
  }
}

async function measure (context: Context, variant: Variant, exchange: string | undefined): Promise<Measured> {
  const { args } = context
  const seconds = args.quick ? Math.min(1, args.latencySeconds) : args.latencySeconds
  const measured: Measured = { fanout: new Map(), rates: new Map() }
  const options = { history: variant.history, ...(exchange === undefined ? {} : { exchange }) }
  await withPeer(variant.peer, options, async (deployment) => {
    let connected = 0
    for (const { subs, rates } of POINTS) {
      await deployment.connect(subs - connected, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })
      connected = subs
      for (const rate of rates) measured.rates.set(rateKey(subs, rate), await fixedRate(deployment, rate, args.warmup, seconds))
    }
    await deployment.connect(FANOUT_SUBS - connected, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })
    for (const burst of BURSTS) {
      const brokerBefore = brokerCpu()
      const result = await throughput(deployment, { burst, size: SIZE, topic: FANOUT_TOPIC }, args)
      const broker = delta(brokerCpu(), brokerBefore)
      measured.fanout.set(burst, {
        framesPerSec: result.framesPerSec,
        cpuPerFrame: result.cpuPerFrame,
        brokerPerEvent: broker === undefined ? undefined : broker / result.published
      })
    }
  })
  return measured
}

const ratio = (value: number, baseline: number | undefined): string => baseline === undefined ? '' : (value / baseline).toFixed(2)
const fixed = (value: number | undefined, digits: number): string => value === undefined ? '-' : value.toFixed(digits)

export async function historyLive (context: Context): Promise<Table[]> {
  const results = new Map<string, Measured>()
  for (const variant of VARIANTS) {
    const shared = variant.peer !== 'evsock-memory'
    results.set(variant.label, shared
      ? await withExchange(variant.unreadStream === true, (exchange) => measure(context, variant, exchange))
      : await measure(context, variant, undefined))
  }
  const fanoutRows: Cell[][] = []
  const rateRows: Cell[][] = []
  for (const variant of VARIANTS) {
    const own = results.get(variant.label)!
    const base = variant.baseline === undefined ? undefined : results.get(variant.baseline)
    const shared = variant.peer !== 'evsock-memory'
    for (const [burst, point] of own.fanout) {
      const was = base?.fanout.get(burst)
      fanoutRows.push([variant.label, burst, Math.round(point.framesPerSec), ratio(point.framesPerSec, was?.framesPerSec),
        point.cpuPerFrame.toFixed(2), ratio(point.cpuPerFrame, was?.cpuPerFrame), shared ? fixed(point.brokerPerEvent, 1) : '-'])
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
      title: `History, live path: fan-out (${FANOUT_SUBS.toLocaleString('en-US')} subscribers, ${SIZE} B; ratios against history off, same run)`,
      columns: ['variant', 'burst', 'frames/s', 'vs off', 'server µs/frame', 'vs off', 'broker µs/event'],
      rows: fanoutRows
    },
    {
      title: `History, live path: latency at fixed rates (${SIZE} B, publish to receipt; CPU in % of one core)`,
      columns: ['variant', 'subs', 'events/s', 'frames/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'p99 vs off', 'server CPU %', 'vs off', 'broker CPU %', 'generator CPU %'],
      rows: rateRows
    }
  ]
}
