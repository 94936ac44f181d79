// How fast a resume replays (docs/protocol.md section 6): events per second
// into one socket resuming from the start of a filled history, at two ack
// windows; and into many sockets resuming one range at once, at the default
// cap on concurrent replays and with no cap to speak of. On the in-process
// bus and on RabbitMQ (one instance: replays are per instance).
import { setTimeout as sleep } from 'node:timers/promises'
import { withExchange } from '../lib/amqp-topology.js'
import { brokerCpu } from '../lib/broker-cpu.js'
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer, type Deployment } from '../lib/deploy.js'
import type { Child } from '../lib/rpc.js'
import { peersOf, type Cell, type Context, type Table } from '../lib/results.js'
import type { PeerName } from '../lib/peers.js'
import type { ConnectArgs, ResumeArgs } from '../gen/main.js'
import { ackEvery } from './fanout.js'

const SIZE = 128
const TOPIC = FANOUT_TOPIC
const MANY = 1000
const TIMEOUT_MS = 90_000
const PEER = { memory: 'evsock-memory', amqp: 'evsock-amqp' } as const satisfies Record<string, PeerName>

interface Setup { window: number, maxReplays: number, one: boolean, many: boolean }

// One deployment per server setting; the default one serves both kinds of resume.
const SETUPS: Setup[] = [
  { window: 64, maxReplays: 16, one: true, many: true },
  { window: 256, maxReplays: 16, one: true, many: false },
  { window: 64, maxReplays: MANY, one: false, many: true }
]

interface Sizes {
  /** Events published into the history; one socket resumes from before the first. */
  retained: number
  /** Events each of the many sockets resumes: the last of those retained. */
  tail: number
}

/** Where to resume from: before every retained event, and before the tail. */
interface Positions { all: string, tail: string }

/** Waits, bounded, until the deployment's clients have received `count` events in all. */
async function received (deployment: Deployment, count: number): Promise<void> {
  const until = Date.now() + TIMEOUT_MS
  for (;;) {
    const { events } = await deployment.snapshot()
    if (events >= count) return
    if (Date.now() > until) throw new Error(`the live subscriber received ${events} of ${count} events within ${TIMEOUT_MS} ms`)
    await sleep(20)
  }
}

/** A position from the `ok` to a fresh `sub`: everything published so far is behind it. */
async function probe (deployment: Deployment, generator: Child): Promise<string> {
  const answer = await generator.call<string>('probe', { port: deployment.ports[0], topic: TOPIC })
  const pos = (JSON.parse(answer) as { pos?: unknown }).pos
  if (typeof pos !== 'string') throw new Error(`the ok to a sub carries no pos: ${answer}`)
  return pos
}

/**
 * Fills the history. A live subscriber receives every event, so that when it
 * has them all this instance's history has read them too, and a probe's `pos`
 * is the newest event's.
 */
async function fill (deployment: Deployment, generator: Child, sizes: Sizes, window: number): Promise<Positions> {
  await deployment.connect(1, { topic: TOPIC, ackEvery: ackEvery(window) })
  let published = 0
  const publish = async (count: number): Promise<void> => {
    published += await deployment.fill({ count, size: SIZE, topic: TOPIC })
    await received(deployment, published)
  }
  // A history with no event yet gives no position.
  await publish(1)
  const all = await probe(deployment, generator)
  await publish(sizes.retained - sizes.tail)
  const tail = await probe(deployment, generator)
  await publish(sizes.tail)
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
  const brokerAfter = brokerCpu()
  const total = sockets * events
  const elapsedMs = after.at - before.at
  const percent = (us: number): number => us / elapsedMs / 10
  return {
    eventsPerSec: total / (done.at(-1)! / 1000),
    first: done[0]!,
    median: done[Math.floor(done.length / 2)]!,
    last: done.at(-1)!,
    serverPerEvent: (after.cpu - before.cpu) / total,
    broker: brokerAfter === undefined || brokerBefore === undefined ? undefined : percent(brokerAfter - brokerBefore),
    generator: percent(after.generatorCpu - before.generatorCpu)
  }
}

async function runSetup (bus: 'memory' | 'amqp', setup: Setup, sizes: Sizes, exchange: string | undefined): Promise<Cell[][]> {
  const rows: Cell[][] = []
  const options = { window: setup.window, history: { maxReplays: setup.maxReplays }, ...(exchange === undefined ? {} : { exchange }) }
  await withPeer(PEER[bus], options, async (deployment) => {
    const generator = deployment.generator()
    const positions = await fill(deployment, generator, sizes, setup.window)
    const points: Array<[number, string, number]> = []
    if (setup.one) points.push([1, positions.all, sizes.retained])
    if (setup.many) points.push([MANY, positions.tail, sizes.tail])
    for (const [sockets, since, events] of points) {
      const head = [bus, sockets, events, setup.window, setup.maxReplays]
      try {
        const r = await resume(deployment, generator, sockets, since, events, setup.window)
        rows.push([...head, Math.round(r.eventsPerSec), r.first.toFixed(0), r.median.toFixed(0), r.last.toFixed(0), r.serverPerEvent.toFixed(2),
          r.broker === undefined || bus === 'memory' ? '-' : r.broker.toFixed(1), r.generator.toFixed(1)])
      } catch (err) {
        // One failed point should not cost the rest of the run: the row says what happened.
        rows.push([...head, `failed: ${(err as Error).message.split('\n')[0]}`, '', '', '', '', '', ''])
      }
    }
  })
  return rows
}

export async function historyReplay (context: Context): Promise<Table[]> {
  const sizes: Sizes = context.args.quick ? { retained: 5000, tail: 200 } : { retained: 20_000, tail: 1000 }
  const rows: Cell[][] = []
  const peers = peersOf(context, Object.values(PEER))
  for (const bus of (['memory', 'amqp'] as const).filter((b) => peers.includes(PEER[b]))) {
    for (const setup of SETUPS) {
      rows.push(...bus === 'amqp'
        ? await withExchange(false, (exchange) => runSetup(bus, setup, sizes, exchange))
        : await runSetup(bus, setup, sizes, undefined))
    }
  }
  return [{
    title: `History, replay: sockets resuming with since (${sizes.retained.toLocaleString('en-US')} events of ${SIZE} B retained; ` +
      'done = ms from the subs to a socket\'s last event; CPU in % of one core)',
    columns: ['bus', 'sockets', 'events each', 'window', 'maxReplays', 'events/s', 'first done ms', 'median done ms', 'last done ms',
      'server µs/event', 'broker CPU %', 'generator CPU %'],
    rows
  }]
}
