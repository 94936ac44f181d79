import { test } from 'tap'
import { delay, openClient, startServer, type Message, type TestClient, type TestServer } from './helpers/server.js'
import { roundTrip, runScript, waitFor, within } from './helpers/wait.js'

// Attacks on the limits of history and resume (docs/protocol.md section 6) on
// the in-process bus: retention trimming what a replay has yet to read, the
// edges of retention, replay slots, connections and servers closing during
// replays. Each event's data is its index in `published`.

let requestId = 1

/** Resolves with the answer (ok or error) to a `sub`, sent with a fresh id. */
async function subscribe (client: TestClient, topic: string, since?: string): Promise<Message> {
  const id = requestId++
  const from = client.messages.length
  client.send(since === undefined ? { op: 'sub', id, topic } : { op: 'sub', id, topic, since })
  return await client.next((message) => message.id === id && (message.op === 'ok' || message.op === 'error'), { from, timeout: 5000 })
}

/** Publishes each topic in turn; returns their ids. */
async function publishEach (server: TestServer, topics: string[]): Promise<string[]> {
  const ids: string[] = []
  for (const topic of topics) ids.push((await server.app.publish(topic, ids.length)).id)
  return ids
}

function idsOf (client: TestClient): string[] {
  return client.events().map((event) => event.id as string)
}

/** The pos of the history's newest event, from the `ok` of a throwaway sub on a fresh connection. */
async function newestPos (t: Parameters<typeof startServer>[0], server: TestServer): Promise<string> {
  const probe = await openClient(t, server, { sub: 'probe' })
  const { pos } = await subscribe(probe, 'probe.never')
  probe.ws.terminate()
  if (typeof pos !== 'string') throw new Error('the ok carried no pos')
  return pos
}

/** Waits until `client` is closed or has received `id`, whichever comes first. */
async function closedOrGot (client: TestClient, id: string): Promise<void> {
  await waitFor(() => idsOf(client).includes(id) || client.ws.readyState === client.ws.CLOSED, { what: `event ${id} or a close` })
}

const names = (prefix: string, count: number, from = 0): string[] => Array.from({ length: count }, (_, i) => `${prefix}.${i + from}`)

/**
 * A replay of r.1 to r.5 with a window of 1, stopped after r.1 for want of
 * an ack while `trim` makes retention drop the rest; then the client acks.
 * What it got must be a prefix of what it was owed, and it must be told to
 * resume again (1013).
 */
async function trimmedMidReplay (t: Parameters<typeof startServer>[0], history: { maxBytes?: number, maxAgeMs?: number }, trim: (server: TestServer) => Promise<void>): Promise<void> {
  const server = await startServer(t, { history, window: 1 })
  const since = (await publishEach(server, ['r.0']), await newestPos(t, server))
  const owed = await publishEach(server, names('r', 5, 1))
  const client = await openClient(t, server)
  t.equal((await subscribe(client, 'r.*', since)).recovered, true)
  await waitFor(() => idsOf(client).length === 1, { what: 'the first replayed event (window 1)' })
  await trim(server)
  const [sentinel] = await publishEach(server, ['r.end'])
  client.ackEach()
  client.send({ op: 'ack', seq: 1 })
  await closedOrGot(client, sentinel as string)
  const got = idsOf(client)
  t.same(got, owed.slice(0, got.length), `what came is a prefix of what was owed, no gap: got ${got.length} events, the last ${got.at(-1) === sentinel ? 'the sentinel' : 'an owed one'}`)
  const { code, reason } = await within(client.closed, { what: 'a 1013 close', timeoutMs: 1000 })
  t.same({ code, reason }, { code: 1013, reason: 'resume again' })
}

test('retention (maxBytes) dropping events a running replay has yet to read closes it with 1013, never a silent gap', async (t) => {
  // About 50 bytes each: the flood pushes r.2 to r.5 out of 4000 bytes.
  await trimmedMidReplay(t, { maxBytes: 4000 }, async (server) => { await publishEach(server, names('flood', 200)) })
})

test('retention (maxAgeMs) dropping events a running replay has yet to read closes it with 1013, never a silent gap', async (t) => {
  const maxAgeMs = 1500
  // Not a wait for an absence: the events the replay still owes have to grow older than maxAgeMs.
  await trimmedMidReplay(t, { maxAgeMs }, async () => { await delay(maxAgeMs + 200) })
})

test('since at the edge of retention: recovered true with every event after it while it is retained, false once it is not', async (t) => {
  // Every event weighs topic + id + payload = 4 + 5 + 1 bytes: 100 bytes retain exactly the newest ten.
  const server = await startServer(t, { history: { maxBytes: 100 } })
  const watcher = await openClient(t, server, { sub: 'watcher' })
  watcher.ackEach()
  await subscribe(watcher, 'e.*')
  const ids: string[] = []
  for (let i = 10; i < 50; i++) ids.push((await server.app.publish(`e.${i}`, 0, { id: `id-${i}` })).id)
  await waitFor(() => idsOf(watcher).length === ids.length, { what: 'every event on the watcher' })
  const positions = watcher.events().map((event) => event.pos as string)
  const oldestRetained = ids.length - 10
  const resumed: Array<{ at: number, client: TestClient, recovered: unknown }> = []
  for (let at = oldestRetained - 4; at < ids.length; at++) {
    const client = await openClient(t, server)
    client.ackEach()
    resumed.push({ at, client, recovered: (await subscribe(client, 'e.*', positions[at])).recovered })
  }
  for (const { at, client, recovered } of resumed) {
    if (recovered === true && at < ids.length - 1) await waitFor(() => idsOf(client).includes(ids.at(-1) as string), { what: `the replay after event ${at} up to the newest` })
  }
  // One sentinel, once every replay is done (another event would move the edge).
  const [sentinel] = await publishEach(server, ['e.sentinel'])
  for (const { at, client, recovered } of resumed) {
    await waitFor(() => idsOf(client).includes(sentinel as string), { what: `the sentinel on the client resumed after event ${at}` })
    if (at >= oldestRetained) t.equal(recovered, true, `since = event ${at}, retained`)
    if (at < oldestRetained - 1) t.equal(recovered, false, `since = event ${at}, older than retention`)
    const owed = recovered === true ? [...ids.slice(at + 1), sentinel] : [sentinel]
    t.same(idsOf(client), owed, `since = event ${at}, recovered ${String(recovered)}: ${recovered === true ? 'every event after it' : 'live only'}`)
  }
})

test('a tiny maxPendingEvents does not close a connection whose replay waits for acks while live events pile up', async (t) => {
  const server = await startServer(t, { history: true, window: 2, maxPendingEvents: 1 })
  const since = (await publishEach(server, ['p.start']), await newestPos(t, server))
  const missed = await publishEach(server, names('p', 20))
  const client = await openClient(t, server)
  t.equal((await subscribe(client, 'p.*', since)).recovered, true)
  await waitFor(() => idsOf(client).length === 2, { what: 'the first window of the replay' })
  // Ten times the pending bound, while the window is full: the replay reads them in their turn.
  const live = await publishEach(server, names('p', 20, 20))
  await roundTrip(client)
  client.ackEach()
  client.send({ op: 'ack', seq: 2 })
  const [sentinel] = await publishEach(server, ['p.end'])
  await closedOrGot(client, sentinel as string)
  t.same(idsOf(client), [...missed, ...live, sentinel], 'everything once, in order')
  t.equal(server.app.eventSocket.stats().slowConsumerCloses, 0)
})

/** A server with `maxReplays` 1 and a connection whose replay holds the slot: window 1, and it does not ack. */
async function slotHeld (t: Parameters<typeof startServer>[0], maxBytes?: number) {
  const server = await startServer(t, { history: { maxReplays: 1, maxBytes }, window: 1 })
  const since = (await publishEach(server, ['s.start']), await newestPos(t, server))
  const missed = await publishEach(server, names('s', 10))
  const holder = await openClient(t, server, { sub: 'holder' })
  t.equal((await subscribe(holder, 's.*', since)).recovered, true)
  await waitFor(() => idsOf(holder).length === 1, { what: 'the holder\'s first replayed event' })
  return { server, since, missed, holder }
}

test('maxReplays 1: connections that close while waiting for the slot leave nothing behind, the next one is served', async (t) => {
  const { server, since, missed, holder } = await slotHeld(t)
  const waiting = await Promise.all(Array.from({ length: 10 }, async () => {
    const client = await openClient(t, server)
    client.ackEach()
    await subscribe(client, 's.*', since)
    return client
  }))
  for (const client of waiting) client.ws.terminate()
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'the waiting connections to be gone' })
  const late = await openClient(t, server)
  late.ackEach()
  t.equal((await subscribe(late, 's.*', since)).recovered, true)
  holder.ackEach()
  holder.send({ op: 'ack', seq: 1 })
  const [sentinel] = await publishEach(server, ['s.end'])
  await waitFor(() => idsOf(late).includes(sentinel as string), { what: 'the late connection\'s replay and the sentinel', detail: () => `${idsOf(late).length} events` })
  t.same(idsOf(late), [...missed, sentinel])
  t.same(idsOf(holder), [...missed, sentinel])
})

test('maxReplays 1: a connection closing mid-replay leaves the next one its replay in full', async (t) => {
  const { server, since, missed, holder } = await slotHeld(t)
  const next = await openClient(t, server)
  next.ackEach()
  t.equal((await subscribe(next, 's.*', since)).recovered, true)
  holder.ws.terminate()
  const [sentinel] = await publishEach(server, ['s.end'])
  await waitFor(() => idsOf(next).includes(sentinel as string), { what: 'the next connection\'s replay and the sentinel', detail: () => `${idsOf(next).length} events` })
  t.same(idsOf(next), [...missed, sentinel])
})

test('app.close() during replays closes every socket with 1001 in bounded time', async (t) => {
  const server = await startServer(t, { history: { maxReplays: 2 }, window: 1 })
  const since = (await publishEach(server, ['c.start']), await newestPos(t, server))
  await publishEach(server, names('c', 50))
  const clients = await Promise.all(Array.from({ length: 5 }, async () => {
    const client = await openClient(t, server)
    await subscribe(client, 'c.*', since)
    return client
  }))
  // Each has its window of 1 full: its replay is under way, waiting for an ack (and for a slot after it).
  await waitFor(() => clients.every((client) => idsOf(client).length === 1), { what: 'five replays under way' })
  await within(server.app.close(), { what: 'app.close() with replays under way', timeoutMs: 5000 })
  const closes = await within(Promise.all(clients.map(async (client) => (await client.closed).code)), { what: 'every socket to close' })
  t.same(closes, [1001, 1001, 1001, 1001, 1001])
})

test('connections closed mid-replay, then app.close(): the process exits by itself', async (t) => {
  const child = runScript(t, `
    import Fastify from 'fastify'
    import WebSocket from 'ws'
    import eventSocket from './lib/index.ts'
    const app = Fastify()
    await app.register(eventSocket, { jwt: { secret: 'replay-secret-at-least-32-characters!!' }, history: { maxReplays: 2 }, window: 1 })
    const address = await app.listen({ port: 0, host: '127.0.0.1' })
    const token = app.jwt.sign({ sub: 'u1', role: 'admin' })
    const open = () => new Promise((resolve) => {
      const ws = new WebSocket(address.replace('http', 'ws') + '/events', [], { headers: { authorization: 'Bearer ' + token } })
      const messages = []
      ws.on('message', (raw) => { messages.push(JSON.parse(raw.toString())); if (messages.length === 1) resolve({ ws, messages }) })
    })
    const until = async (check) => { while (!check()) await new Promise((resolve) => setTimeout(resolve, 5)) }
    await app.publish('c.start', {})
    const probe = await open()
    probe.ws.send(JSON.stringify({ op: 'sub', id: 1, topic: 'probe.never' }))
    await until(() => probe.messages.some((m) => m.op === 'ok'))
    const since = probe.messages.find((m) => m.op === 'ok').pos
    probe.ws.terminate()
    for (let i = 0; i < 100; i++) await app.publish('c.' + i, { i })
    const clients = await Promise.all([1, 2, 3, 4, 5, 6].map(() => open()))
    for (const { ws } of clients) ws.send(JSON.stringify({ op: 'sub', id: 1, topic: 'c.*', since }))
    await until(() => clients.every(({ messages }) => messages.some((m) => m.op === 'ok')))
    await until(() => clients.every(({ messages }) => messages.some((m) => m.op === 'event')))
    // Two of them ack once, so that their replays wait for a slot again; then three go.
    for (const { ws } of clients.slice(0, 2)) ws.send(JSON.stringify({ op: 'ack', seq: 1 }))
    for (const { ws } of clients.slice(1, 4)) ws.terminate()
    await until(() => app.eventSocket.stats().connections === 3)
    await app.close()
    process.stdout.write(JSON.stringify({ closed: true }) + '\\n')
  `)
  t.same(await child.firstLine, { closed: true })
  t.equal(await child.exited('the child to exit by itself after app.close() (a handle left open keeps it alive)', 5000), 0)
})

test('a since older than retention joining a running replay is answered recovered false, and the connection is not closed', async (t) => {
  const server = await startServer(t, { history: { maxBytes: 3000 }, window: 1 })
  await publishEach(server, ['z.0'])
  const gone = await newestPos(t, server)
  // About 50 bytes each: z.0 falls out of 3000 bytes.
  await publishEach(server, names('f', 100))
  const client = await openClient(t, server)
  await subscribe(client, 'x.*')
  await publishEach(server, ['x.1'])
  await waitFor(() => idsOf(client).length === 1, { what: 'x.1, which fills the window of 1' })
  const retained = await newestPos(t, server)
  await publishEach(server, ['f.last'])
  // A replay after `retained`: it starts, and waits for room, having sent nothing.
  t.equal((await subscribe(client, 'a.#', retained)).recovered, true)
  // The sub with the older since and the ack that makes room, in one TCP write.
  const socket = (client.ws as unknown as { _socket: { cork: () => void, uncork: () => void } })._socket
  const from = client.messages.length
  socket.cork()
  client.send({ op: 'sub', id: 999, topic: 'b.*', since: gone })
  client.send({ op: 'ack', seq: 1 })
  socket.uncork()
  const answer: Message = await Promise.race([client.next((message) => message.id === 999, { from }), client.closed.then((closed) => ({ op: 'closed', ...closed }))])
  t.same(answer.op === 'closed' ? answer : { op: answer.op, recovered: answer.recovered }, { op: 'ok', recovered: false }, 'older than retention: recovered false')
  client.ackEach()
  const [sentinel] = await publishEach(server, ['b.end'])
  await closedOrGot(client, sentinel as string)
  t.same(client.events().map((event) => event.topic), ['x.1', 'b.end'], 'not closed: live from the ok on')
})
