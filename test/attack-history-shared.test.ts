import t, { type Test } from 'tap'
import type { ConsumeMessage } from 'amqplib'
import { RecentMessages } from '../lib/bus/amqp-recent.js'
import { MemoryHistory } from '../lib/bus/memory-history.js'
import type { BusHistory } from '../lib/bus/types.js'
import type { Format } from '../lib/codec.js'
import { requireBroker } from './helpers/broker.js'
import { publishForeign, type Foreign } from './helpers/foreign.js'
import { clusterOptions } from './helpers/instance.js'
import { openClient, startServer, type Message, type TestClient, type TestServer } from './helpers/server.js'
import { watchStreamReaders } from './helpers/stream-readers.js'
import { recentHistory, replayAll, streamDelivery } from './helpers/replays.js'
import { waitFor } from './helpers/wait.js'

// Attacks on two changes to history: replays sharing one encoded event per
// message a history keeps in memory (lib/bus/retained-event.ts), whose frames
// count in the RabbitMQ history's recent messages; and cursors handing out a
// message that is not an event as skipped, so that a replay moves past it.

// ---------------------------------------------------------------- in-process

/** A stream delivery as the live consumer takes it: `size` bytes of data. */
function delivery (offset: number, size: number): ConsumeMessage {
  return streamDelivery(offset, { id: `big-${offset}`, topic: `big.${offset}`, time: Date.now(), payload: Buffer.from(JSON.stringify('x'.repeat(size - 2))) })
}

/** Replays every event of `history` into one connection of `format`; resolves with the ids sent. */
async function replayed (history: BusHistory, format: Format, encodeFailed: () => void = () => {}): Promise<string[]> {
  return (await replayAll(history, format, { encodeFailed })).map((event) => event.id)
}

/** The bytes the recent messages count for what they keep now. */
function countedBytes (recent: RecentMessages): number {
  let bytes = 0
  for (let seq = recent.seqOf(recent.firstOffset ?? 0), taken = recent.at(seq); taken !== undefined; taken = recent.at(++seq)) bytes += taken.bytes
  return bytes
}

t.test('the recent messages stay within their bound once replays in both formats encoded frames, with nothing published after', async (t) => {
  const size = 4000
  const deliveries = Array.from({ length: 10 }, (_, offset) => delivery(offset, size))
  // Room for the ten deliveries as counted (body and 512 bytes each), not for their frames besides (about twice the body).
  const maxBytes = 10 * (size + 512)
  const recent = new RecentMessages(maxBytes)
  for (const taken of deliveries) recent.append(taken)
  const history = recentHistory(recent, deliveries)
  const all = deliveries.map((taken) => taken.properties.messageId as string)
  const replays = await Promise.all(['json', 'msgpack', 'json', 'msgpack'].map(async (format) => await replayed(history, format as Format)))
  t.same(replays, [all, all, all, all], 'every replay got every event once, in order, from memory or the stream')
  const counted = countedBytes(recent)
  t.ok(counted <= maxBytes, `the recent messages count ${counted} bytes for what they keep (from offset ${String(recent.firstOffset)}), within ${maxBytes}`)
})

/** Nested past what the MessagePack encoder can recurse: only a message no check saw (a bus's own) gets this far. */
const tooDeep = (): Buffer => Buffer.from('['.repeat(5000) + ']'.repeat(5000))

t.test('an event with no MessagePack frame, replayed to many clients of both formats: skipped for MessagePack alone, reported once', async (t) => {
  const history = new MemoryHistory({ maxAgeMs: 60_000, maxBytes: 1 << 20, maxReplays: 16 })
  const ids = ['a', 'deep', 'b']
  for (const id of ids) history.append({ id, topic: `t.${id}`, time: Date.now(), payload: id === 'deep' ? tooDeep() : Buffer.from('{}') })
  let failures = 0
  const formats: Format[] = ['msgpack', 'json', 'msgpack', 'json', 'msgpack']
  const replays = await Promise.all(formats.map(async (format) => await replayed(history, format, () => { failures++ })))
  t.same(replays, formats.map((format) => format === 'json' ? ids : ['a', 'b']), 'JSON replays got it; MessagePack ones skipped it, and went on')
  t.equal(failures, 1, 'the failure was reported once, for every replay that shares the event')
})

// ----------------------------------------------------------------- RabbitMQ

let requestId = 1

/** Sends a `sub` (with `since` when given) and resolves with its answer. */
async function sub (client: TestClient, topic: string, since?: string): Promise<Message> {
  const id = requestId++
  const from = client.messages.length
  client.send({ op: 'sub', id, topic, ...(since === undefined ? {} : { since }) })
  return await client.next((message) => message.id === id && (message.op === 'ok' || message.op === 'error'), { from, timeout: 5000 })
}

/** What a client got, format aside: each event's topic, id, pos and data. */
const got = (client: TestClient): unknown[] => client.events().map(({ topic, id, pos, data }) => ({ topic, id, pos, data }))
const gotIds = (client: TestClient): string[] => client.events().map((event) => event.id as string)

/** Waits until every client got event `id` (or closed: the assertions after say what it got). */
async function allGot (clients: TestClient[], id: string, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => clients.every((client) => gotIds(client).includes(id) || client.ws.readyState === client.ws.CLOSED), {
    what: `event ${id} at every client`,
    timeoutMs,
    detail: () => clients.map((client) => `${client.format}: ${client.events().length}`).join(', ')
  })
}

/** The `pos` of an `ok` to a sub without `since` on a fresh connection: the head of the live path, where a client that got nothing resumes from. */
async function headPos (t: Test, server: TestServer): Promise<string> {
  const probe = await openClient(t, server, { sub: 'probe' })
  let pos: unknown
  await waitFor(async () => typeof (pos = (await sub(probe, `probe.p${requestId}`)).pos) === 'string', { what: 'an ok with a pos' })
  probe.ws.terminate()
  return pos as string
}

/** Publishes an invalid foreign message on `topic` and waits for the live path to drop it: the head is its offset then. */
async function foreignLast (t: Test, server: TestServer, exchange: string, topic: string, count = 1): Promise<void> {
  const watcher = await openClient(t, server, { sub: 'watcher' })
  await sub(watcher, topic)
  const before = server.app.eventSocket.stats().eventsDropped
  const invalid: Foreign = { what: 'a body that is not JSON', routingKey: topic, body: Buffer.from('not json {') }
  await publishForeign(exchange, Array.from({ length: count }, () => invalid))
  await waitFor(() => server.app.eventSocket.stats().eventsDropped >= before + count, { what: `the live path to drop ${count} invalid message(s)`, detail: () => `${server.app.eventSocket.stats().eventsDropped - before} dropped` })
  watcher.ws.terminate()
}

/** Opens a client that acks each event. */
async function acking (t: Test, server: TestServer, format: Format = 'json'): Promise<TestClient> {
  const client = await openClient(t, server, { format, sub: 'resumer' })
  client.ackEach()
  return client
}

/**
 * The replay of `client` has ended: a `sub` without `since` is answered with
 * a `pos` only when no replay is under way (docs/protocol.md section 6).
 */
async function replayEnded (client: TestClient, what: string): Promise<void> {
  await waitFor(async () => typeof (await sub(client, `ended.e${requestId}`)).pos === 'string', { what, timeoutMs: 3000 })
}

async function mixedFormats (t: Test): Promise<void> {
  const options = clusterOptions(t)
  const server = await startServer(t, options)
  const live = { json: await acking(t, server, 'json'), msgpack: await acking(t, server, 'msgpack') }
  for (const client of Object.values(live)) await sub(client, 'm.#')
  const { id: start } = await server.app.publish('m.start', { n: -1 })
  await allGot(Object.values(live), start)
  const since = await headPos(t, server)
  const data = (n: number): unknown => ({ n, text: `é${'\u2028'.repeat(n % 3)}`, big: 2 ** 53 - n, nested: [{ n }, null, true], half: n / 2 })
  const ids: string[] = []
  for (let n = 0; n < 200; n++) ids.push((await server.app.publish(`m.${n % 7}`, data(n))).id)
  const resumers = await Promise.all(Array.from({ length: 10 }, async (_, i) => await acking(t, server, i % 2 === 0 ? 'json' : 'msgpack')))
  const answers = await Promise.all(resumers.map(async (client) => await sub(client, 'm.#', since)))
  t.same(answers.map((answer) => answer.recovered), resumers.map(() => true), 'every resume is recovered')
  const { id: sentinel } = await server.app.publish('m.end', { n: 'end' })
  await allGot([...resumers, ...Object.values(live)], sentinel)
  const expected = got(live.json).slice(1)
  t.same(expected.map((event) => (event as { id: string }).id), [...ids, sentinel], 'the live JSON subscriber got every event')
  t.same(got(live.msgpack).slice(1), expected, 'the live MessagePack subscriber got the same events, data and pos')
  for (const [i, client] of resumers.entries()) t.same(got(client), expected, `resumer ${i} (${client.format}): every event once, in order, with its own format's bytes decoding to the same data and pos`)
}

async function sinceForeign (t: Test): Promise<void> {
  const options = clusterOptions(t)
  const exchange = options.broker?.exchange as string
  const server = await startServer(t, options)
  const { id: before } = await server.app.publish('s.before', {})
  await foreignLast(t, server, exchange, 's.x')
  const since = await headPos(t, server)
  const owed: string[] = []
  for (let n = 0; n < 5; n++) owed.push((await server.app.publish(`s.${n}`, { n })).id)
  for (const source of ['recovered', 'after a rejoin'] as const) {
    const client = await acking(t, server)
    const ok = await sub(client, 's.*', since)
    t.same({ op: ok.op, recovered: ok.recovered }, { op: 'ok', recovered: true }, `${source}: a resume from a foreign message's offset is recovered`)
    const { id: sentinel } = await server.app.publish(`s.end${source === 'recovered' ? 1 : 2}`, {})
    await allGot([client], sentinel)
    t.same(gotIds(client), [...owed, sentinel], `${source}: every event after it once, in order (not ${before}), then live`)
    owed.push(sentinel)
  }
}

/** Invalid foreign messages in a row, after the `since` of a resume. */
const FOREIGN_RUN = 2000

async function foreignRun (t: Test, source: 'recent' | 'stream'): Promise<void> {
  // From the stream: 2,000 foreign messages, each counted 512 bytes and more in memory, push the since out of 512 KB of recent messages.
  const options = clusterOptions(t, { history: { maxReplays: 1, ...(source === 'stream' ? { maxBytes: 512 * 1024 } : {}) } })
  const exchange = options.broker?.exchange as string
  const server = await startServer(t, options)
  const readers = watchStreamReaders(t, `${exchange}.history`)
  await server.app.publish('r.before', {})
  const since = await headPos(t, server)
  await foreignLast(t, server, exchange, 'r.x', FOREIGN_RUN)
  const clients = [await acking(t, server), await acking(t, server)]
  const started = Date.now()
  for (const [i, client] of clients.entries()) {
    t.equal((await sub(client, 'r.*', since)).recovered, true, `resume ${i + 1} is recovered`)
    // With maxReplays 1, the second could only end if the first gave its slot back.
    await replayEnded(client, `resume ${i + 1}'s replay to end over ${FOREIGN_RUN} foreign messages, with nothing published after`)
  }
  const elapsed = Date.now() - started
  const { id: sentinel } = await server.app.publish('r.end', {})
  await allGot(clients, sentinel)
  t.same(clients.map(gotIds), [[sentinel], [sentinel]], 'nothing replayed, then live')
  const consumes = readers.offsets
  const cursors = consumes.filter((offset) => typeof offset === 'number').length
  const probes = consumes.length - cursors
  if (source === 'recent') t.same(consumes, [], `read from memory: no stream consumer, no probe (${elapsed} ms)`)
  else {
    t.equal(cursors, 2, 'read from the stream: one cursor per replay')
    // One per resume (is since + 1 retained?), and one per hole RabbitMQ leaves between chunks (some 450 messages apart): not one per foreign message.
    t.ok(probes <= 2 + 2 * Math.ceil(FOREIGN_RUN / 400), `${probes} probes of the oldest offset for two replays over ${FOREIGN_RUN} foreign messages (${elapsed} ms)`)
  }
}

if (await requireBroker(t)) {
  t.test('JSON and MessagePack clients resuming over the same events at once, beside live subscribers of both: each its own format\'s bytes, once, in order', mixedFormats)
  t.test('a resume from the pos of an ok that names a foreign message (the head): every event after it once', sinceForeign)
  t.test(`${FOREIGN_RUN} foreign messages and nothing else after since, from the recent messages: the replays end at once (maxReplays 1), no broker read`, (t) => foreignRun(t, 'recent'))
  t.test(`${FOREIGN_RUN} foreign messages and nothing else after since, from the stream: the replays end at once (maxReplays 1), no probe per message`, (t) => foreignRun(t, 'stream'))
}
