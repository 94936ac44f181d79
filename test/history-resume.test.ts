import { test } from 'tap'
import { openClient, startServer, type Message, type TestClient, type TestServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'
import { ReplaySlots } from '../lib/replay.js'

// Resuming with `since` on the in-process bus's history (docs/protocol.md
// section 6), on the wire: what the server replays, where the seam falls,
// what it answers. The bundled client's own resume is in client-resume*.

async function sub (client: TestClient, topic: string, since?: string): Promise<Message> {
  const id = Math.floor(Math.random() * 1e9)
  const from = client.messages.length
  client.send(since === undefined ? { op: 'sub', id, topic } : { op: 'sub', id, topic, since })
  return await client.next((message) => message.id === id && (message.op === 'ok' || message.op === 'error'), { from })
}

async function publishAll (server: TestServer, topics: string[]): Promise<string[]> {
  const ids: string[] = []
  for (const topic of topics) ids.push((await server.app.publish(topic, { n: ids.length })).id)
  return ids
}

/** Waits for the event with id `id`, and returns the ids of every event received from `from` on. */
async function idsUntil (client: TestClient, id: string, from = 0): Promise<string[]> {
  await waitFor(() => client.events().some((event) => event.id === id), { what: `event ${id}`, detail: () => JSON.stringify(client.events().map((event) => event.id)) })
  return client.events().slice(from).map((event) => event.id as string)
}

/**
 * The step most resumes start from: a client subscribes `pattern`, gets the
 * event published on `topic` and goes away (its connection terminated).
 * Returns that event's pos, to resume from.
 */
async function sinceAfter (t: Parameters<typeof startServer>[0], server: TestServer, pattern: string, topic: string, format: 'json' | 'msgpack' = 'json'): Promise<string> {
  const first = await openClient(t, server, { format })
  first.ackEach()
  await sub(first, pattern)
  const [id] = await publishAll(server, [topic])
  await idsUntil(first, id as string)
  const since = first.events().at(-1)?.pos as string
  first.ws.terminate()
  return since
}

test('events carry pos; a resume replays exactly what came after since, then live, with no gap or duplicate', async (t) => {
  const server = await startServer(t, { history: true })
  const first = await openClient(t, server)
  first.ackEach()
  t.equal((await sub(first, 'orders.#')).op, 'ok')
  const before = await publishAll(server, ['orders.1', 'stock.1', 'orders.2'])
  const seen = await idsUntil(first, before[2] as string)
  t.same(seen, [before[0], before[2]])
  const since = first.events().at(-1)?.pos as string
  t.type(since, 'string')
  first.ws.terminate()

  const missed = await publishAll(server, ['orders.3', 'stock.2', 'orders.4.x'])
  const second = await openClient(t, server)
  second.ackEach()
  const ok = await sub(second, 'orders.#', since)
  t.same({ op: ok.op, recovered: ok.recovered }, { op: 'ok', recovered: true })
  const live = await publishAll(server, ['orders.5'])
  const resumed = await idsUntil(second, live[0] as string)
  t.same(resumed, [missed[0], missed[2], live[0]], 'the missed events once, in order, then live')
  const positions = second.events().map((event) => event.pos as string)
  t.equal(new Set(positions).size, positions.length, 'every pos distinct')
})

test('a resume on a second pattern joins the same replay: events matching both go out once, in order', async (t) => {
  const server = await startServer(t, { history: true })
  const since = await sinceAfter(t, server, 'a.#', 'a.0')
  const missed = await publishAll(server, ['a.1', 'b.1', 'a.b', 'c.1', 'b.2'])
  const second = await openClient(t, server)
  second.ackEach()
  // Both subs in one burst, as the bundled client sends them.
  second.send({ op: 'sub', id: 1, topic: 'a.#', since })
  second.send({ op: 'sub', id: 2, topic: '*.b', since })
  second.send({ op: 'sub', id: 3, topic: 'b.*', since })
  const sentinel = await publishAll(server, ['a.end'])
  const got = await idsUntil(second, sentinel[0] as string)
  t.same(got, [missed[0], missed[1], missed[2], missed[4], sentinel[0]])
  const oks = second.messages.filter((message) => message.op === 'ok')
  t.same(oks.map((ok) => ok.recovered), [true, true, true])
})

test('a since older than retention: recovered false, then live', async (t) => {
  const server = await startServer(t, { history: { maxBytes: 2000 } })
  const since = await sinceAfter(t, server, 'x.*', 'x.1')
  // Each event is about 100 bytes: 100 of them push x.1 out of 2000 bytes.
  await publishAll(server, Array.from({ length: 100 }, (_, i) => `x.${i + 2}`))
  const second = await openClient(t, server)
  second.ackEach()
  const ok = await sub(second, 'x.*', since)
  t.same({ op: ok.op, recovered: ok.recovered }, { op: 'ok', recovered: false })
  const [after] = await publishAll(server, ['x.after'])
  t.same(await idsUntil(second, after as string), [after], 'live only')
})

test('a since this server never issued is BAD_REQUEST, and not counted as a bad frame', async (t) => {
  const server = await startServer(t, { history: true, maxBadFrames: 2 })
  const client = await openClient(t, server)
  for (const since of ['nonsense', '00000000-0', '', 'deadbeef-zz']) {
    const answer = await sub(client, 'a.*', since)
    t.same({ op: answer.op, code: answer.code }, { op: 'error', code: 'BAD_REQUEST' }, `since ${JSON.stringify(since)}`)
  }
  t.equal((await sub(client, 'a.*')).op, 'ok', 'the connection is still open after four refusals with maxBadFrames 2')
})

test('a position of another server (an in-process history before a restart) is BAD_REQUEST', async (t) => {
  const old = await startServer(t, { history: true })
  const since = await sinceAfter(t, old, 'a.*', 'a.1')
  const restarted = await startServer(t, { history: true })
  await publishAll(restarted, ['a.1', 'a.2'])
  const other = await openClient(t, restarted)
  const answer = await sub(other, 'a.*', since)
  t.same({ op: answer.op, code: answer.code }, { op: 'error', code: 'BAD_REQUEST' })
})

test('the ok of a sub carries a pos to resume from before any event arrived', async (t) => {
  const server = await startServer(t, { history: true })
  await publishAll(server, ['z.0'])
  const first = await openClient(t, server)
  const ok = await sub(first, 'y.*')
  t.type(ok.pos, 'string')
  first.ws.terminate()
  const missed = await publishAll(server, ['y.1', 'y.2'])
  const second = await openClient(t, server)
  second.ackEach()
  const answer = await sub(second, 'y.*', ok.pos)
  t.equal(answer.recovered, true)
  t.same(await idsUntil(second, missed[1] as string), missed)
})

test('history off: no pos, and since is answered recovered false', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  client.ackEach()
  const ok = await sub(client, 'a.*', 'anything')
  t.same({ op: ok.op, recovered: ok.recovered, pos: ok.pos }, { op: 'ok', recovered: false, pos: undefined })
  const [id] = await publishAll(server, ['a.1'])
  await idsUntil(client, id as string)
  t.notOk('pos' in (client.events()[0] as Message))
})

test('a replay is paced by the ack window', async (t) => {
  const server = await startServer(t, { history: true, window: 4 })
  const since = await sinceAfter(t, server, 'p.*', 'p.0')
  const missed = await publishAll(server, Array.from({ length: 20 }, (_, i) => `p.${i + 1}`))
  const second = await openClient(t, server)
  await sub(second, 'p.*', since)
  await waitFor(() => second.events().length === 4, { what: 'the first window of the replay' })
  // A round trip: a replay that ignored the window would have sent more by now.
  t.equal((await sub(second, 'q.*')).op, 'ok')
  t.equal(second.events().length, 4, 'no more than the window before an ack')
  second.ackEach()
  second.send({ op: 'ack', seq: 4 })
  const got = await idsUntil(second, missed[19] as string)
  t.same(got, missed)
})

test('4008 with history on names where to resume: the last acknowledged event', async (t) => {
  const server = await startServer(t, { history: true, window: 2, maxPendingEvents: 3 })
  const client = await openClient(t, server)
  await sub(client, 's.*')
  await publishAll(server, ['s.1'])
  await client.next((message) => message.op === 'event')
  client.send({ op: 'ack', seq: 1 })
  // Its answer comes after the ack was taken: acks are handled as they arrive.
  await sub(client, 'other.*')
  const acked = client.events()[0]?.pos as string
  // Not acked from here: two fill the window, four overflow the pending queue of 3.
  for (let i = 2; i < 12; i++) server.app.publish(`s.${i}`, {}).catch(() => {})
  const closed = await within(client.closed, { what: 'the 4008 close' })
  t.equal(closed.code, 4008)
  t.equal(closed.reason, `slow consumer; resume after ${acked}`)
})

test('MessagePack events carry pos too, and resume the same way', async (t) => {
  const server = await startServer(t, { history: true })
  const since = await sinceAfter(t, server, 'm.*', 'm.1', 'msgpack')
  t.type(since, 'string')
  const missed = await publishAll(server, ['m.2', 'm.3'])
  const second = await openClient(t, server, { format: 'msgpack' })
  second.ackEach()
  t.equal((await sub(second, 'm.*', since)).recovered, true)
  t.same(await idsUntil(second, missed[1] as string), missed)
})

test('a resuming client that stops acking holds no replay slot: with maxReplays 1 the next one replays in full', async (t) => {
  const server = await startServer(t, { history: { maxReplays: 1 }, window: 2 })
  const since = await sinceAfter(t, server, 'r.*', 'r.0')
  const missed = await publishAll(server, Array.from({ length: 10 }, (_, i) => `r.${i + 1}`))
  const stalled = await openClient(t, server)
  await sub(stalled, 'r.*', since)
  await waitFor(() => stalled.events().length === 2, { what: 'the stalled client\'s first window' })
  await waitFor(() => server.app.eventSocket.stats().replays?.reading === 0, { what: 'the stalled replay to give up its slot', detail: () => JSON.stringify(server.app.eventSocket.stats().replays) })
  t.same(server.app.eventSocket.stats().replays, { reading: 0, waiting: 0 }, 'stats: no replay holds or waits for the slot')
  const next = await openClient(t, server)
  next.ackEach()
  await sub(next, 'r.*', since)
  t.same(await idsUntil(next, missed[9] as string), missed, 'replayed while the other sits on a full window')
  stalled.ackEach()
  stalled.send({ op: 'ack', seq: 2 })
  t.same(await idsUntil(stalled, missed[9] as string), missed, 'and the stalled one finishes once it acks')
})

test('replay slots: at most maxReplays taken, the rest served in arrival order, a cancelled wait leaves the queue', async (t) => {
  const slots = new ReplaySlots(2)
  const order: string[] = []
  const a = slots.acquire()
  const b = slots.acquire()
  const c = slots.acquire()
  const d = slots.acquire()
  const e = slots.acquire()
  for (const [name, slot] of Object.entries({ a, b, c, d, e })) slot.taken.then(() => order.push(name), () => {})
  await Promise.resolve()
  t.same(order, ['a', 'b'])
  t.equal(slots.waiting, 3)
  t.equal(slots.reading, 2)
  d.release()
  t.equal(slots.waiting, 2, 'd left the queue')
  a.release()
  a.release()
  await Promise.resolve()
  t.same(order, ['a', 'b', 'c'], 'one release hands on one slot, however often it is called')
  b.release()
  await Promise.resolve()
  t.same(order, ['a', 'b', 'c', 'e'])
  c.release()
  e.release()
  const f = slots.acquire()
  const g = slots.acquire()
  const h = slots.acquire()
  await Promise.resolve()
  t.equal(slots.waiting, 1, 'two free again after every holder released')
  t.equal(slots.reading, 2)
  for (const slot of [f, g, h]) slot.release()
})

test('retention trimming what a running replay still has to read closes the socket with 1013', async (t) => {
  const server = await startServer(t, { history: { maxBytes: 3000 }, window: 1 })
  const since = await sinceAfter(t, server, 't.*', 't.0')
  await publishAll(server, Array.from({ length: 10 }, (_, i) => `t.${i + 1}`))
  const second = await openClient(t, server)
  t.equal((await sub(second, 't.*', since)).recovered, true)
  await waitFor(() => second.events().length === 1, { what: 'the first replayed event (window 1, not acked)' })
  // While it waits for the ack, enough is published to push the rest of its range out of 3000 bytes.
  await publishAll(server, Array.from({ length: 60 }, (_, i) => `other.${i}`))
  second.send({ op: 'ack', seq: 1 })
  const closed = await within(second.closed, { what: 'the close of the socket whose replay lost its events' })
  t.same(closed, { code: 1013, reason: 'resume again' })
})

test('an unsub during a replay ends that pattern\'s part of it; a sub without since joins it from now', async (t) => {
  const server = await startServer(t, { history: true, window: 1 })
  const since = await sinceAfter(t, server, 'u.*', 'u.0')
  const missed = await publishAll(server, ['u.1', 'v.1', 'u.2', 'v.2'])
  const second = await openClient(t, server)
  second.send({ op: 'sub', id: 1, topic: 'u.*', since })
  second.send({ op: 'sub', id: 2, topic: 'v.*', since })
  await waitFor(() => second.events().length === 1, { what: 'the first replayed event' })
  second.send({ op: 'unsub', id: 3, topic: 'v.*' })
  second.send({ op: 'sub', id: 4, topic: 'w.*' })
  await second.next((message) => message.id === 4)
  const later = await publishAll(server, ['v.3', 'w.1', 'u.3'])
  second.ackEach()
  second.send({ op: 'ack', seq: 1 })
  const got = await idsUntil(second, later[2] as string)
  t.same(got, [missed[0], missed[2], later[1], later[2]], 'v.* gone from the replay, w.* from when it was subscribed')
})
