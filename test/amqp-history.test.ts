import { randomUUID } from 'node:crypto'
import { connect } from 'amqplib'
import t, { type Test } from 'tap'
import { createAmqpBus } from '../lib/bus/amqp.js'
import type { BusHistory, BusMessage, SkippedMessage } from '../lib/bus/types.js'
import type { ResolvedBrokerOptions, ResolvedHistoryOptions } from '../lib/options.js'
import {
  bindingsOf, brokerOptions, busMessage, privateVhost, rabbitmqctl, recordingLogger, requireBroker, startBus, withChannel, type StartedBus
} from './helpers/broker.js'
import { waitFor, within } from './helpers/wait.js'

// The amqp bus with history on, against the real RabbitMQ: the stream it
// declares, the live path across connection cuts, cursors across them,
// retention, a stream declared before with other arguments, and the bus
// without history, which must not have changed.

const MiB = 1024 * 1024
const HISTORY: ResolvedHistoryOptions = { maxAgeMs: 3_600_000, maxBytes: 64 * MiB, maxReplays: 16 }

interface HistoryBus extends StartedBus { history: BusHistory }

/** A started amqp bus with history, recording what it receives and logs; closed when the test ends. */
async function startHistoryBus (t: Test, options: ResolvedBrokerOptions, history = HISTORY): Promise<HistoryBus> {
  const { log, entries } = recordingLogger()
  const bus = createAmqpBus(options, log, history)
  t.teardown(() => bus.close())
  const received: BusMessage[] = []
  await bus.start((message) => { received.push(message) })
  return { bus, received, entries, history: bus.history as BusHistory }
}

/**
 * A started history bus with `pattern` bound before start resolves, so that
 * anything its live path took at its start would reach deliver.
 */
async function startBoundBus (t: Test, options: ResolvedBrokerOptions, pattern: string): Promise<HistoryBus> {
  const { log, entries } = recordingLogger()
  const bus = createAmqpBus(options, log, HISTORY)
  t.teardown(() => bus.close())
  const received: BusMessage[] = []
  const started = bus.start((message) => { received.push(message) })
  const bound = bus.bind(pattern)
  await started
  await bound
  return { bus, received, entries, history: bus.history as BusHistory }
}

/** Publishes `count` messages `<prefix>.<i>` through `bus`, in batches of 10 (several chunks of the stream); returns them. */
async function seed (bus: StartedBus['bus'], prefix: string, count: number): Promise<BusMessage[]> {
  const sent = Array.from({ length: count }, (_, i) => busMessage(`${prefix}.${i}`))
  for (let i = 0; i < count; i += 10) await Promise.all(sent.slice(i, i + 10).map((message) => bus.publish(message)))
  return sent
}

/** Options on an exchange of the test's own in the default vhost; its stream is deleted at the end too (it outlives every bus). */
function streamOptions (t: Test, overrides: Partial<ResolvedBrokerOptions> = {}): ResolvedBrokerOptions {
  const options = brokerOptions(t, overrides)
  t.teardown(() => withChannel(options.url as string, (channel) => channel.deleteQueue(`${options.exchange}.history`)))
  return options
}

function vhostOf (url: string): string {
  return decodeURIComponent(new URL(url).pathname.slice(1))
}

/** Closes the consumer connections of the buses in `vhost`; other connections (the third party's) stay. */
async function cutConsumers (vhost: string): Promise<number> {
  const listed = await rabbitmqctl('list_connections', 'pid', 'vhost', 'client_properties')
  const pids = listed.split('\n')
    .map((line) => line.split('\t'))
    .filter(([, host, properties]) => host === vhost && properties?.includes('"fastify-event-socket consumer ') === true)
    .map(([pid]) => pid as string)
  // At once: cut one by one, the first would be back before the last is cut.
  await Promise.all(pids.map((pid) => rabbitmqctl('close_connection', pid, 'evsock history test cut')))
  return pids.length
}

interface Producer {
  /** Ids confirmed by the broker, in publish order. */
  confirmed: string[]
  /** Stops publishing, then publishes `sentinel` and closes; returns its id. */
  finish: (sentinel: string) => Promise<string>
}

/** Another producer on a connection of its own, publishing `<prefix>.n<i>` one by one with confirms until finished. */
async function producer (t: Test, url: string, exchange: string, prefix: string): Promise<Producer> {
  const connection = await connect(url, { clientProperties: { connection_name: 'evsock history test producer' } })
  t.teardown(() => connection.close().catch(() => {}))
  const channel = await connection.createConfirmChannel()
  const confirmed: string[] = []
  const send = async (topic: string): Promise<string> => {
    const id = randomUUID()
    channel.publish(exchange, topic, Buffer.from(JSON.stringify({ topic })), { messageId: id })
    await channel.waitForConfirms()
    return id
  }
  const state = { running: true }
  const loop = (async () => {
    for (let i = 0; state.running; i++) {
      confirmed.push(await send(`${prefix}.n${i}`))
      // Paced, so that an outage of a few hundred ms spans many messages, not thousands.
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
  })()
  return {
    confirmed,
    finish: async (sentinel) => {
      state.running = false
      await loop
      return await send(sentinel)
    }
  }
}

/** Polls `check` every 5 ms until stopped; returns what it saw. */
function sample (check: () => number | undefined): { stop: () => number[] } {
  const seen: number[] = []
  const timer = setInterval(() => {
    const value = check()
    if (value !== undefined) seen.push(value)
  }, 5)
  return { stop: () => { clearInterval(timer); return seen } }
}

function increasing (offsets: Array<number | undefined>): boolean {
  return offsets.every((offset, i) => Number.isSafeInteger(offset) && (i === 0 || (offset as number) > (offsets[i - 1] as number)))
}

async function streamArguments (name: string): Promise<Record<string, unknown> | undefined> {
  const listed = JSON.parse(await rabbitmqctl('list_queues', 'name', 'arguments', '--formatter', 'json')) as Array<{ name: string, arguments: Array<[string, string, unknown]> }>
  const found = listed.find((queue) => queue.name === name)
  // rabbitmqctl lists arguments as [name, type, value] triples
  return found === undefined ? undefined : Object.fromEntries(found.arguments.map(([key, , value]) => [key, value]))
}

if (await requireBroker(t)) {
  t.test('the stream: declared with the retention options, bound with #, the only thing bound; no instance queue; kept after close', async (t) => {
    const options = streamOptions(t, { queuePrefix: `evsock.test.${randomUUID()}` })
    const history: ResolvedHistoryOptions = { maxAgeMs: 90_500, maxBytes: 10 * MiB, maxReplays: 16 }
    const { bus } = await startHistoryBus(t, options, history)
    await bus.bind('orders.*')
    const stream = `${options.exchange}.history`
    t.same(await streamArguments(stream), {
      'x-queue-type': 'stream',
      'x-max-age': '91s',
      'x-max-length-bytes': 10 * MiB,
      'x-stream-max-segment-size-bytes': 10 * MiB / 8
    })
    t.same(await bindingsOf(options.exchange), [{ queue: stream, key: '#' }], 'the stream, bound with #, and no instance queue bound to anything')
    const queues = await rabbitmqctl('list_queues', 'name')
    t.notOk(queues.includes(options.queuePrefix), 'no instance queue')
    await bus.close()
    await withChannel(options.url as string, (channel) => channel.checkQueue(stream))
    t.pass('close leaves the stream (it is every instance\'s)')
  })

  t.test('two instances with other patterns: the same offsets for the same messages, and the same head', async (t) => {
    const options = streamOptions(t)
    const a = await startHistoryBus(t, options)
    const b = await startHistoryBus(t, options)
    await a.bus.bind('x.*')
    await b.bus.bind('x.#')
    const sent = ['x.1', 'x.1.2', 'y.1', 'x.2', 'x.end'].map((topic) => busMessage(topic))
    for (const message of sent) await a.bus.publish(message)
    const last = sent[sent.length - 1] as BusMessage
    for (const instance of [a, b]) await waitFor(() => instance.received.some((each) => each.id === last.id), { what: 'x.end' })
    t.same(a.received.map((each) => each.topic), ['x.1', 'x.2', 'x.end'])
    t.same(b.received.map((each) => each.topic), ['x.1', 'x.1.2', 'x.2', 'x.end'])
    const offsetsOf = (instance: StartedBus): Map<string, number | undefined> => new Map(instance.received.map((each) => [each.id, each.offset]))
    for (const [id, offset] of offsetsOf(a)) t.equal(offsetsOf(b).get(id), offset, 'one offset per message, everywhere')
    t.equal(a.history.head, b.history.head, 'the same head once both took the last message')
    t.equal(a.history.head, a.received.at(-1)?.offset, 'the offset of the last message')
  })

  t.test('the consumer connection cut while another producer publishes: the live path resumes after head, no gap, no duplicate', async (t) => {
    const url = await privateVhost(t)
    const options = brokerOptions(t, { url, prefetch: 16, reconnectInitialDelayMs: 300, reconnectMaxDelayMs: 300 })
    const subscriber = await startHistoryBus(t, options)
    await subscriber.bus.bind('cut.#')
    const third = await producer(t, url, options.exchange, 'cut')
    await waitFor(() => subscriber.received.length >= 100, { what: '100 deliveries before the cut' })
    const whileDown = sample(() => subscriber.bus.health().state === 'down' ? third.confirmed.length : undefined)
    t.equal(await cutConsumers(vhostOf(url)), 1, 'one consumer connection cut')
    await waitFor(() => subscriber.entries.some((entry) => entry.msg.includes('connection lost')), { what: 'the cut noticed' })
    await waitFor(() => subscriber.bus.health().state === 'up', { what: 'the consumer back' })
    const down = whileDown.stop()
    const more = third.confirmed.length + 100
    await waitFor(() => third.confirmed.length >= more, { what: '100 more publishes after the reconnect' })
    const sentinel = await third.finish('cut.end')
    await waitFor(() => subscriber.received.some((each) => each.id === sentinel), { what: 'the sentinel', timeoutMs: 15_000 })

    t.ok(down.length > 0 && (down.at(-1) as number) > (down[0] as number), `published while the consumer was down (${down[0]} to ${down.at(-1)})`)
    t.same(subscriber.received.map((each) => each.id), [...third.confirmed, sentinel], `every message once, in order (${third.confirmed.length} + the sentinel)`)
    t.ok(increasing(subscriber.received.map((each) => each.offset)), 'offsets increase')
    t.equal(subscriber.history.head, subscriber.received.at(-1)?.offset)
  })

  t.test('a cursor reading while its connection is cut goes on after its last offset: no gap, no duplicate', async (t) => {
    const url = await privateVhost(t)
    const options = brokerOptions(t, { url, reconnectInitialDelayMs: 300, reconnectMaxDelayMs: 300 })
    const reader = await startHistoryBus(t, options)
    const third = await producer(t, url, options.exchange, 'read')
    // Everything in this vhost's fresh stream is the producer's, from offset 0.
    const cursor = reader.history.read(0)
    t.teardown(() => cursor.close())
    const read: BusMessage[] = []
    const next = async (): Promise<BusMessage> => {
      const message = await within(cursor.next(), { what: `message ${read.length + 1} from the cursor` })
      if ('skipped' in message) throw new Error(`the producer's message at ${message.offset} was skipped: ${message.skipped}`)
      read.push(message)
      return message
    }
    while (read.length < 50) await next()
    await cutConsumers(vhostOf(url))
    // Past what the cursor had buffered before the cut (128 at most): the rest came on a new channel.
    const more = third.confirmed.length + 300
    await waitFor(() => third.confirmed.length >= more, { what: '300 more publishes after the cut' })
    const sentinel = await third.finish('read.end')
    let last: BusMessage
    do last = await next()
    while (last.id !== sentinel)
    t.ok(reader.entries.some((entry) => entry.msg.includes('connection lost')), 'the connection was cut')
    t.same(read.map((each) => each.id), [...third.confirmed, sentinel], `every message once, in order (${read.length})`)
    t.ok(increasing(read.map((each) => each.offset)), 'offsets increase')
  })

  t.test('a new instance on a stream that holds messages: head is the stream\'s end at once, nothing older is delivered, the next message once', async (t) => {
    const options = streamOptions(t)
    const earlier = await startHistoryBus(t, options)
    await earlier.bus.bind('old.*')
    const sent = await seed(earlier.bus, 'old', 35)
    await waitFor(() => earlier.received.length === sent.length, { what: 'the earlier instance to take every message' })
    const end = earlier.history.head
    const fresh = await startBoundBus(t, options, 'old.*')
    t.equal(fresh.history.head, end, `head is the stream's newest offset (${end}) before anything new is published`)
    const next = busMessage('old.next')
    await fresh.bus.publish(next)
    // Delivered in offset order: anything older would have come before it.
    await waitFor(() => fresh.received.some((each) => each.id === next.id), { what: 'the message published after the start' })
    t.same(fresh.received.map((each) => each.id), [next.id], 'only the new message, once')
    t.ok((fresh.received[0]?.offset as number) > end, 'after the stream\'s end')
    t.equal(fresh.history.head, fresh.received[0]?.offset)
  })

  t.test('a new instance while another producer publishes without pause: every message after where it started, none before, none twice', async (t) => {
    const options = streamOptions(t)
    const earlier = await startHistoryBus(t, options)
    await earlier.bus.bind('load.#')
    const third = await producer(t, options.url as string, options.exchange, 'load')
    await waitFor(() => earlier.received.length >= 50, { what: '50 messages before the new instance starts' })
    const before = earlier.history.head
    const fresh = await startBoundBus(t, options, 'load.#')
    const more = third.confirmed.length + 100
    await waitFor(() => third.confirmed.length >= more, { what: '100 more publishes after the start' })
    const sentinel = await third.finish('load.end')
    for (const instance of [earlier, fresh]) await waitFor(() => instance.received.some((each) => each.id === sentinel), { what: 'the sentinel' })
    const start = fresh.entries.find((entry) => entry.msg.includes('consuming the history stream'))?.offset as number
    t.ok(Number.isSafeInteger(start) && start > before, `started (${start}) after what was published before the start (${before})`)
    const expected = earlier.received.filter((each) => (each.offset as number) >= start).map((each) => each.id)
    t.ok(expected.length > 100, `${expected.length} messages from where it started`)
    t.same(fresh.received.map((each) => each.id), expected, 'every message from where it started, once, in order: the probe and the live path meet exactly')
  })

  t.test('the consumer cut before it took any message, on an empty stream and on one of 20: the outage\'s messages are delivered once, nothing older', async (t) => {
    const url = await privateVhost(t)
    // Both cases in one vhost, cut at once: a cut takes rabbitmqctl's seconds.
    const cases = await Promise.all([0, 20].map(async (seeded) => {
      const options = brokerOptions(t, { url, reconnectInitialDelayMs: 2500, reconnectMaxDelayMs: 2500 })
      const earlier = await startHistoryBus(t, options)
      await earlier.bus.bind('quiet.old.*')
      await seed(earlier.bus, 'quiet.old', seeded)
      await waitFor(() => earlier.received.length === seeded, { what: 'the earlier instance to take every message' })
      const end = earlier.history.head
      await earlier.bus.close()
      const subscriber = await startBoundBus(t, options, 'quiet.#')
      t.equal(subscriber.history.head, end, `${seeded} messages: head is the stream's end (${end})`)
      const during = Array.from({ length: 20 }, (_, i) => busMessage(`quiet.${i}`))
      return { seeded, exchange: options.exchange, subscriber, during }
    }))
    t.equal(await cutConsumers(vhostOf(url)), cases.length, 'every consumer connection cut')
    for (const { subscriber } of cases) await waitFor(() => subscriber.bus.health().state === 'down', { what: 'the cut noticed' })
    await withChannel(url, async (channel) => {
      for (const { exchange, during } of cases) {
        for (const message of during) channel.publish(exchange, message.topic, message.payload, { messageId: message.id })
      }
      // A plain channel: a round trip after the publishes, and a check that the consumers are still away.
      await channel.checkExchange(cases[0]?.exchange as string)
    })
    t.same(cases.map(({ subscriber }) => subscriber.bus.health().state), cases.map(() => 'down'), 'published while the consumers were away')
    for (const { seeded, subscriber, during } of cases) {
      await waitFor(() => subscriber.bus.health().state === 'up', { what: 'the reconnect', timeoutMs: 15_000 })
      const sentinel = busMessage('quiet.end')
      await subscriber.bus.publish(sentinel)
      await waitFor(() => subscriber.received.some((each) => each.id === sentinel.id), { what: 'the sentinel' })
      t.same(subscriber.received.map((each) => each.id), [...during, sentinel].map((each) => each.id), `${seeded} messages: the outage's messages and the sentinel, once each`)
    }
  })

  t.test('foreign messages in the stream: dropped by the live path, which still moves head past them, and skipped by cursors', async (t) => {
    const options = streamOptions(t)
    const { log, entries } = recordingLogger()
    const bus = createAmqpBus(options, log, HISTORY)
    t.teardown(() => bus.close())
    const received: BusMessage[] = []
    const dropped: string[] = []
    await bus.start(Object.assign((message: BusMessage) => { received.push(message) }, { dropped: (reason: string) => { dropped.push(reason) } }))
    const history = bus.history as BusHistory
    await bus.bind('foreign.*')
    const first = busMessage('foreign.first')
    await bus.publish(first)
    await waitFor(() => received.length === 1, { what: 'the first message' })
    const from = history.head
    await withChannel(options.url as string, async (channel) => {
      channel.publish(options.exchange, 'foreign.no-id', Buffer.from('{}'))
      channel.publish(options.exchange, 'foreign.not-json', Buffer.from('{'), { messageId: 'x' })
      await channel.checkExchange(options.exchange)
    })
    await waitFor(() => dropped.length === 2, { what: 'both foreign messages dropped' })
    t.ok(history.head >= from + 2, `head passed them (${from} to ${history.head})`)
    t.ok(entries.some((entry) => entry.level === 40 && entry.msg.includes('not a valid event')), 'logged at warn')
    const last = busMessage('foreign.last')
    await bus.publish(last)
    await waitFor(() => received.length === 2, { what: 'the last message' })
    t.same(received.map((each) => each.id), [first.id, last.id], 'only the valid messages delivered')
    const cursor = history.read(received[0]?.offset as number)
    t.teardown(() => cursor.close())
    const read: Array<BusMessage | SkippedMessage> = []
    for (let i = 0; i < 4; i++) read.push(await within(cursor.next(), { what: `read ${i + 1} of 4` }))
    t.same(read.map((each) => 'skipped' in each ? 'skipped' : each.id), [first.id, 'skipped', 'skipped', last.id], 'the cursor hands the foreign ones out as skipped, in their place')
    t.ok(read.every((each, i) => i === 0 || (each.offset as number) > (read[i - 1]?.offset as number)), 'each with its offset, in order')
  })

  t.test('the broker away past publishTimeoutMs: next() and oldest() reject with FST_EVSOCK_BROKER_UNAVAILABLE', async (t) => {
    const url = await privateVhost(t)
    const options = brokerOptions(t, { url, publishTimeoutMs: 1500, reconnectInitialDelayMs: 100, reconnectMaxDelayMs: 200 })
    const bus = await startHistoryBus(t, options)
    await bus.bus.bind('away.*')
    const first = busMessage('away.first')
    await bus.bus.publish(first)
    await waitFor(() => bus.received.length === 1, { what: 'the first message' })
    const cursor = bus.history.read(bus.history.head + 1)
    t.teardown(() => cursor.close())
    const pending = cursor.next()
    pending.catch(() => {})
    // Every reconnect is refused until the permissions are back (the test's teardown needs them too).
    await rabbitmqctl('clear_permissions', '-p', vhostOf(url), 'guest')
    const restore = (): Promise<string> => rabbitmqctl('set_permissions', '-p', vhostOf(url), 'guest', '.*', '.*', '.*')
    t.teardown(restore)
    const cutAt = Date.now()
    await cutConsumers(vhostOf(url))
    await t.rejects(within(pending, { what: 'the cursor to give up', timeoutMs: 10_000 }), { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' })
    t.ok(Date.now() - cutAt >= 1400, `not before publishTimeoutMs (${Date.now() - cutAt} ms)`)
    await t.rejects(cursor.next(), { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' }, 'and on the next call')
    await t.rejects(within(bus.history.oldest(), { what: 'oldest() to give up', timeoutMs: 10_000 }), { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' })
  })

  t.test('retention: with a small maxBytes, oldest() moves forward and a read from 0 starts there', async (t) => {
    const options = streamOptions(t)
    const { bus, history } = await startHistoryBus(t, options, { ...HISTORY, maxBytes: 128 * 1024 })
    t.match(await streamArguments(`${options.exchange}.history`), { 'x-max-length-bytes': 128 * 1024, 'x-stream-max-segment-size-bytes': 64 * 1024 })
    const kilobyte = 'k'.repeat(1000)
    for (let round = 0; round < 4; round++) {
      await Promise.all(Array.from({ length: 200 }, (_, i) => bus.publish(busMessage(`fill.${i}`, kilobyte))))
    }
    // RabbitMQ 3.10 may hold back a new reader of a stream whose segments
    // retention just dropped until something more is published (docs/rabbitmq.md,
    // history stream): the stream goes on being published to, as a live one does.
    const ticker = setInterval(() => { bus.publish(busMessage('tick.more', 'x')).catch(() => {}) }, 250)
    t.teardown(() => clearInterval(ticker))
    const oldest = await history.oldest()
    t.ok(oldest > 0, `retention dropped the first segments (oldest ${oldest})`)
    const cursor = history.read(0)
    t.teardown(() => cursor.close())
    const first = await within(cursor.next(), { what: 'the first retained message' })
    const offset = first.offset as number
    t.ok(offset >= oldest && offset <= await history.oldest(), `a read from 0 starts at the oldest retained message (${offset}, oldest ${oldest})`)
    clearInterval(ticker)
  })

  t.test('oldest(): concurrent calls share one probe', async (t) => {
    const options = streamOptions(t)
    const { bus, history } = await startHistoryBus(t, options)
    await bus.publish(busMessage('one'))
    const calls = Array.from({ length: 1000 }, () => history.oldest())
    t.equal(new Set(calls).size, 1, 'one promise for 1000 callers')
    t.same(new Set(await Promise.all(calls)), new Set([0]))
    const again = history.oldest()
    t.not(again, calls[0], 'a call after it settled probes again')
    t.equal(await again, 0)
  })

  t.test('a stream declared before with other arguments: logged once at warn, and the bus works on it, across reconnects', async (t) => {
    const url = await privateVhost(t)
    const options = brokerOptions(t, { url, reconnectInitialDelayMs: 100, reconnectMaxDelayMs: 200 })
    const stream = `${options.exchange}.history`
    await withChannel(url, (channel) => channel.assertQueue(stream, { durable: true, arguments: { 'x-queue-type': 'stream', 'x-max-age': '7D' } }))
    const subscriber = await startHistoryBus(t, options)
    await subscriber.bus.bind('old.*')
    await cutConsumers(vhostOf(url))
    await waitFor(() => subscriber.entries.filter((entry) => entry.msg.includes('connection up')).length >= 2, { what: 'the reconnect' })
    const sent = busMessage('old.one')
    await subscriber.bus.publish(sent)
    await waitFor(() => subscriber.received.length === 1, { what: 'the message' })
    t.type(subscriber.received[0]?.offset, 'number', 'read from the existing stream, with its offset')
    const refusals = subscriber.entries.filter((entry) => entry.msg.includes('exists with other arguments'))
    t.same(refusals.map((entry) => entry.level), [40, 20], 'warn on the first connection, debug on the reconnect')
    t.match(refusals[0], { stream, err: { message: /PRECONDITION_FAILED/ } })
    t.equal(subscriber.bus.health().state, 'up')
  })

  t.test('positions of another deployment\'s stream are refused', async (t) => {
    const log = recordingLogger().log
    const options = brokerOptions(t)
    const mine = createAmqpBus(options, log, HISTORY).history as BusHistory
    const theirs = createAmqpBus(brokerOptions(t), log, HISTORY).history as BusHistory
    // The same exchange, in another vhost: another stream.
    const otherVhost = createAmqpBus({ ...options, url: 'amqp://guest:guest@127.0.0.1:5672/other' }, log, HISTORY).history as BusHistory
    for (const offset of [0, 5, 123_456]) {
      t.equal(mine.parse(mine.format(offset)), offset)
      t.equal(mine.parse(theirs.format(offset)), undefined, 'another exchange')
      t.equal(mine.parse(otherVhost.format(offset)), undefined, 'another vhost')
    }
  })

  t.test('without history: no stream, the instance queue bound to the patterns, no offsets', async (t) => {
    const options = brokerOptions(t)
    const { bus, received } = await startBus(t, options)
    t.equal(bus.history, undefined, 'no history')
    await bus.bind('plain.*')
    const bindings = await bindingsOf(options.exchange)
    t.equal(bindings.length, 1)
    t.equal(bindings[0]?.key, 'plain.*', 'the pattern bound on the broker')
    t.ok(bindings[0]?.queue.startsWith(options.queuePrefix), 'to the instance queue')
    await t.rejects(withChannel(options.url as string, (channel) => channel.checkQueue(`${options.exchange}.history`)), /404/, 'no stream declared')
    await bus.publish(busMessage('plain.one'))
    await waitFor(() => received.length === 1, { what: 'the message' })
    t.notOk('offset' in (received[0] as BusMessage), 'no offset')
  })
}
