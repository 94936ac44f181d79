// How fast a resume replays (docs/protocol.md section 6): events per second
// into one socket resuming from the start of a filled history, at two ack
// windows; and into many sockets resuming one range at once, at the default
// cap on concurrent replays and with no cap to speak of. On the in-process
// bus and on RabbitMQ (one instance per setting: replays are per instance).
import { setTimeout as sleep } from 'node:timers/promises'
import { BenchExchange } from '../lib/amqp-topology.js'
import { brokerCpu, brokerCpuBetween } from '../lib/broker-cpu.js'
import { FANOUT_TOPIC } from '../lib/config.js'
import { Deployment } from '../lib/deploy.js'
import type { Child } from '../lib/rpc.js'
import { peersOf, type Cell, type Context, type Table } from '../lib/results.js'
import type { PeerName } from '../lib/peers.js'
import type { ConnectArgs, ResumeArgs } from '../gen/main.js'
import { ackEvery } from './fanout.js'

const SIZE = 128
const TOPIC = FANOUT_TOPIC
const MARKER_TOPIC = 'bench.marker'
/**
 * Sockets resuming at once: the same number on both buses. (Before replays
 * read recent events from memory and gave up their stream reader with their
 * slot, 1,000 on RabbitMQ ran the broker out of files, emfile, at its usual
 * limit of 1,024.)
 */
const MANY = { memory: 1000, amqp: 1000 } as const
const TIMEOUT_MS = 90_000
const PEER = { memory: 'evsock-memory', amqp: 'evsock-amqp' } as const satisfies Record<string, PeerName>

type Bus = keyof typeof PEER

interface Setup { window: number, maxReplays: number, one: boolean, many: boolean }

// One deployment per server setting; the default one serves both kinds of resume.
const SETUPS: Setup[] = [
  { window: 64, maxReplays: 16, one: true, many: true },
  { window: 256, maxReplays: 16, one: true, many: false },
  { window: 64, maxReplays: 1000, one: false, many: true }
]

/** One setting's deployment, and the generator holding its marker subscriber and resuming sockets. */
interface Station {
  setup: Setup
  deployment: Deployment
  generator: Child
}

interface Sizes {
  /** Events published into the history; one socket resumes from before the first. */
  retained: number
  /** Events each of the many sockets resumes: the last of those retained. */
  tail: number
}

/** Where to resume from: before every retained event, and before the tail. */
interface Positions { all: string, tail: string }

/** Waits, bounded, until the station's marker subscriber has received `count` markers. */
async function marked ({ deployment }: Station, count: number): Promise<void> {
  const until = Date.now() + TIMEOUT_MS
  for (;;) {
    const { events, closed } = await deployment.snapshot()
    if (events >= count) return
    if (closed > 0) throw new Error('the marker subscriber was closed')
    if (Date.now() > until) throw new Error(`the marker subscriber received ${events} of ${count} markers within ${TIMEOUT_MS} ms`)
    await sleep(20)
  }
}

/** A position from the `ok` to a fresh `sub`: everything published so far is behind it. */
async function probe ({ deployment, generator }: Station): Promise<string> {
  const answer = await generator.call<string>('probe', { port: deployment.ports[0], topic: TOPIC })
  const pos = (JSON.parse(answer) as { pos?: unknown }).pos
  if (typeof pos !== 'string') throw new Error(`the ok to a sub carries no pos: ${answer}`)
  return pos
}

/**
 * Fills the history through `publisher`, with no live subscriber on the
 * events' topic to slow it down. A marker on a topic of its own, once each
 * station's marker subscriber has it, tells that the station's history has
 * read everything published before it: a probe's `pos` is then the marker's,
 * after every event before it. On RabbitMQ every station reads the one
 * stream, so one fill serves them all.
 */
async function fill (publisher: Station, stations: Station[], sizes: Sizes): Promise<Positions> {
  let markers = 0
  const mark = async (): Promise<string> => {
    await publisher.deployment.fill({ count: 1, size: SIZE, topic: MARKER_TOPIC })
    markers++
    await Promise.all(stations.map((station) => marked(station, markers)))
    return await probe(publisher)
  }
  const events = (count: number): Promise<number> => publisher.deployment.fill({ count, size: SIZE, topic: TOPIC })
  const all = await mark()
  await events(sizes.retained - sizes.tail)
  const tail = await mark()
  await events(sizes.tail)
  // Everything is in the history before the clock starts.
  await mark()
  return { all, tail }
}

interface Replayed {
  eventsPerSec: number
  /** When the first and the median socket had all their events, and the last, ms after the subs went out. */
  first: number
  median: number
  last: number
  serverPerEvent: number
  broker: number | undefined
  generator: number
}

let nextUser = 0

/** Opens `sockets` connections, then resumes them all at once from `since`, each expecting `events`. */
async function resume (deployment: Deployment, generator: Child, sockets: number, since: string, events: number, window: number): Promise<Replayed> {
  const offset = 1_000_000 + nextUser
  nextUser += sockets
  await generator.call('open', { proto: 'evsock', ports: deployment.ports, offset, count: sockets, ackEvery: ackEvery(window) } satisfies ConnectArgs)
  const before = await deployment.snapshot()
  const brokerBefore = brokerCpu()
  const done = await generator.call<number[]>('resume', { topic: TOPIC, since, events, timeoutMs: TIMEOUT_MS } satisfies ResumeArgs)
  const after = await deployment.snapshot()
  const broker = brokerCpuBetween(brokerBefore, brokerCpu())
  const total = sockets * events
  const elapsedMs = after.at - before.at
  const percent = (us: number): number => us / elapsedMs / 10
  return {
    eventsPerSec: total / (done.at(-1)! / 1000),
    first: done[0]!,
    median: done[Math.floor(done.length / 2)]!,
    last: done.at(-1)!,
    serverPerEvent: (after.cpu - before.cpu) / total,
    broker: broker === undefined ? undefined : percent(broker),
    generator: percent(after.generatorCpu - before.generatorCpu)
  }
}

/** Starts every setting's deployment (on RabbitMQ all on one exchange, so one stream), each with its marker subscriber. */
async function startStations (bus: Bus, exchange: BenchExchange | undefined): Promise<Station[]> {
  const started = await Promise.allSettled(SETUPS.map(async (setup) => {
    const options = { window: setup.window, history: { maxReplays: setup.maxReplays }, ...(exchange === undefined ? {} : { exchange: exchange.name }) }
    const deployment = await Deployment.start(PEER[bus], options)
    const generator = deployment.generator()
    return { setup, deployment, generator }
  }))
  const stations = started.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
  const failed = started.find((result) => result.status === 'rejected')
  if (failed !== undefined) {
    await Promise.all(stations.map((station) => station.deployment.stop()))
    throw failed.reason
  }
  await Promise.all(stations.map(({ deployment, generator }) => generator.call('connect', {
    proto: 'evsock', ports: deployment.ports, offset: 0, count: 1, topic: MARKER_TOPIC, ackEvery: 1
  } satisfies ConnectArgs)))
  return stations
}

/** A table row: `head`, then what `measure` found, or why it failed. */
async function row (head: Cell[], brokerCpu: boolean, measure: () => Promise<Replayed>): Promise<Cell[]> {
  try {
    const r = await measure()
    return [...head, Math.round(r.eventsPerSec), r.first.toFixed(0), r.median.toFixed(0), r.last.toFixed(0), r.serverPerEvent.toFixed(2),
      r.broker === undefined || !brokerCpu ? '-' : r.broker.toFixed(1), r.generator.toFixed(1)]
  } catch (err) {
    // One failed point should not cost the rest of the run: the row says what happened.
    return [...head, `failed: ${(err as Error).message.split('\n')[0]}`, '', '', '', '', '', '']
  }
}

async function measureStation (bus: Bus, station: Station, positions: Positions, sizes: Sizes): Promise<Cell[][]> {
  const { setup, deployment, generator } = station
  const rows: Cell[][] = []
  const points: Array<[number, string, number]> = []
  if (setup.one) points.push([1, positions.all, sizes.retained])
  if (setup.many) points.push([MANY[bus], positions.tail, sizes.tail])
  for (const [sockets, since, events] of points) {
    const head = [bus, sockets, events, setup.window, setup.maxReplays]
    rows.push(await row(head, bus === 'amqp', () => resume(deployment, generator, sockets, since, events, setup.window)))
  }
  return rows
}

/**
 * One socket resuming from before every retained event on an instance
 * started after they were published: its recent events in memory hold none
 * of them, so the replay reads the stream itself, as after a deploy whose
 * clients were away longer than the new instance has run.
 */
async function fromTheStream (exchange: BenchExchange, positions: Positions, sizes: Sizes): Promise<Cell[]> {
  const setup = SETUPS[0]!
  const head = ['amqp (stream)', 1, sizes.retained, setup.window, setup.maxReplays]
  const deployment = await Deployment.start(PEER.amqp, { window: setup.window, history: { maxReplays: setup.maxReplays }, exchange: exchange.name })
  try {
    return await row(head, true, () => resume(deployment, deployment.generator(), 1, positions.all, sizes.retained, setup.window))
  } finally {
    await deployment.stop()
  }
}

async function measureBus (bus: Bus, sizes: Sizes): Promise<Cell[][]> {
  const exchange = bus === 'amqp' ? await BenchExchange.create(false) : undefined
  try {
    const stations = await startStations(bus, exchange)
    try {
      const rows: Cell[][] = []
      const shared = exchange === undefined ? undefined : await fill(stations[0]!, stations, sizes)
      for (const station of stations) {
        const positions = shared ?? await fill(station, [station], sizes)
        rows.push(...await measureStation(bus, station, positions, sizes))
      }
      if (shared !== undefined && exchange !== undefined) rows.push(await fromTheStream(exchange, shared, sizes))
      return rows
    } finally {
      await Promise.all(stations.map((station) => station.deployment.stop()))
    }
  } finally {
    await exchange?.delete()
  }
}

export async function historyReplay (context: Context): Promise<Table[]> {
  // RabbitMQ replays some thousands of events/s: a larger tail would take minutes.
  const sizes: Sizes = context.args.quick ? { retained: 5000, tail: 50 } : { retained: 20_000, tail: 200 }
  const rows: Cell[][] = []
  const peers = peersOf(context, Object.values(PEER))
  for (const bus of (['memory', 'amqp'] as const).filter((b) => peers.includes(PEER[b]))) rows.push(...await measureBus(bus, sizes))
  return [{
    title: `History, replay: sockets resuming with since (${sizes.retained.toLocaleString('en-US')} events of ${SIZE} B retained; ` +
      'done = ms from the subs to a socket\'s last event; CPU in % of one core)',
    columns: ['bus', 'sockets', 'events each', 'window', 'maxReplays', 'events/s', 'first done ms', 'median done ms', 'last done ms',
      'server µs/event', 'broker CPU %', 'generator CPU %'],
    rows
  }]
}
