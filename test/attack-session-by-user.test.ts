import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// Red-team attack on commit 4d1e534 (lib/by-user.ts, lib/hub.ts): a user's
// connections are kept for revocations as the one connection itself, a Set
// from the second (and back to the connection when one is left). Driven end
// to end with revoke(sub) and real clients: 1, 2 and 3 connections, some
// closing while others stay, revoking while connections are closing, and two
// users who must not affect each other. Every revoked socket must get 4001
// 'token revoked'; the others keep receiving, proved with a sentinel.

const REVOKED = { code: 4001, reason: 'token revoked' }
const seconds = (ms: number): number => Math.floor(ms / 1000)

/** A token issued in the second after this one: a revocation made now does not cover it. */
const issuedAfter = (server: TestServer, sub: string): string => server.sign({ sub, role: 'admin', iat: seconds(Date.now()) + 1 })

async function connect (t: Test, server: TestServer, sub: string): Promise<TestClient> {
  const client = await openClient(t, server, { sub, role: 'admin' })
  t.equal((await client.subscribe('feed.all')).op, 'ok', `${sub}: subscribed`)
  return client
}

/** The client's close, bounded. */
async function closedOf (client: TestClient): Promise<{ code: number, reason: string }> {
  return await within(client.closed, { what: 'the socket to close', timeoutMs: 5000 })
}

let sentinels = 0

/** Publishes a sentinel and waits for each of `alive` to get it: they are open and still delivered to. */
async function stillDelivered (t: Test, server: TestServer, alive: TestClient[], what: string): Promise<void> {
  const n = ++sentinels
  const from = alive.map((client) => client.messages.length)
  await server.app.publish('feed.all', { sentinel: n })
  for (const [i, client] of alive.entries()) {
    await client.next((message) => message.op === 'event' && message.data?.sentinel === n, { from: from[i], timeout: 5000 })
  }
  t.pass(`${what}: ${alive.length} connection(s) still receive events`)
}

/** Closes `client` from its side and waits for the server to have ended it. */
async function closeAndWait (server: TestServer, client: TestClient, open: number): Promise<void> {
  client.close()
  await closedOf(client)
  await waitFor(() => server.app.eventSocket.stats().connections === open, {
    what: `the server to count ${open} connections`, detail: () => String(server.app.eventSocket.stats().connections)
  })
}

for (const count of [1, 2, 3]) {
  t.test(`a user with ${count} connection(s): revoke closes each with 4001, a bystander keeps receiving`, async (t) => {
    const server = await startServer(t)
    const mine = await Promise.all(Array.from({ length: count }, () => connect(t, server, 'mallory')))
    const bystander = await connect(t, server, 'alice')
    t.equal(await server.app.eventSocket.revoke('mallory'), count, `revoke reports ${count} closed`)
    for (const client of mine) t.same(await closedOf(client), REVOKED)
    await stillDelivered(t, server, [bystander], 'after the revocation')
    t.equal(server.app.eventSocket.stats().connections, 1)
    t.equal(await server.app.eventSocket.revoke('mallory'), 0, 'a second revoke finds nothing left: none was kept after it closed')
  })
}

t.test('3 → 2 → 1 → 2 → 3 connections (closing while others stay): revoke closes exactly the open ones', async (t) => {
  const server = await startServer(t)
  const [a, b, c] = await Promise.all([0, 1, 2].map(() => connect(t, server, 'mallory')))
  const bystander = await connect(t, server, 'alice')
  await closeAndWait(server, a!, 3)
  await stillDelivered(t, server, [b!, c!, bystander], 'one of three closed')
  await closeAndWait(server, b!, 2)
  await stillDelivered(t, server, [c!, bystander], 'two of three closed (one left: held as it is)')
  const d = await connect(t, server, 'mallory')
  const e = await connect(t, server, 'mallory')
  await stillDelivered(t, server, [c!, d, e, bystander], 'back to three')
  t.equal(await server.app.eventSocket.revoke('mallory'), 3, 'the three open ones, none of the closed')
  for (const client of [c!, d, e]) t.same(await closedOf(client), REVOKED)
  t.equal(a!.ws.readyState, WebSocket.CLOSED)
  await stillDelivered(t, server, [bystander], 'after the revocation')
  t.equal(await server.app.eventSocket.revoke('mallory'), 0, 'nothing left for mallory')
})

t.test('the one connection left after a Set is revoked, and a new one after revoke is not', async (t) => {
  const server = await startServer(t)
  const [a, b] = await Promise.all([0, 1].map(() => connect(t, server, 'mallory')))
  await closeAndWait(server, b!, 1)
  t.equal(await server.app.eventSocket.revoke('mallory'), 1, 'the survivor of the Set')
  t.same(await closedOf(a!), REVOKED)
  const later = await openClient(t, server, { token: issuedAfter(server, 'mallory') })
  t.equal((await later.subscribe('feed.all')).op, 'ok')
  await stillDelivered(t, server, [later], 'a token issued after the revocation')
})

t.test('revoking while connections are closing: the open ones get 4001, none is left behind', async (t) => {
  const server = await startServer(t, { maxBadFrames: 1 })
  const clients = await Promise.all([0, 1, 2, 3, 4].map(() => connect(t, server, 'mallory')))
  const bob = await connect(t, server, 'bob')
  const [byClient, byClient2, byBadFrame, open1, open2] = clients as [TestClient, TestClient, TestClient, TestClient, TestClient]
  // Two close from their side, one is being closed by the server (4002 for a bad frame), in the same turn as the revoke.
  byClient.close()
  byClient2.ws.terminate()
  byBadFrame.ws.send('not json')
  await waitFor(() => byBadFrame.messages.some((message) => message.op === 'error'), { what: 'the bad frame to be refused' })
  const closed = await server.app.eventSocket.revoke('mallory')
  t.ok(closed >= 2 && closed <= 5, `revoke reports between the two surely open and all five (${closed})`)
  t.same(await closedOf(open1), REVOKED, 'an open one: 4001')
  t.same(await closedOf(open2), REVOKED, 'the other open one: 4001')
  const codes = await Promise.all([byClient, byClient2, byBadFrame].map(async (client) => (await closedOf(client)).code))
  t.ok([1005, 4001].includes(codes[0]!), `the one closing itself: its own close or 4001 (${codes[0]})`)
  t.ok([1006, 4001].includes(codes[1]!), `the terminated one: 1006 (${codes[1]})`)
  t.ok([4002, 4001].includes(codes[2]!), `the one closed for a bad frame: 4002 or 4001 (${codes[2]})`)
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'only bob to be left', detail: () => String(server.app.eventSocket.stats().connections) })
  await stillDelivered(t, server, [bob], 'bob, after mallory\'s five went')
  t.equal(await server.app.eventSocket.revoke('mallory'), 0, 'none of mallory\'s five is still held')
})

t.test('two users with interleaved connections and closes do not affect each other', async (t) => {
  const server = await startServer(t)
  const alice = [await connect(t, server, 'alice')]
  const bob = [await connect(t, server, 'bob')]
  alice.push(await connect(t, server, 'alice'))
  bob.push(await connect(t, server, 'bob'))
  alice.push(await connect(t, server, 'alice'))
  // alice: 3 → 1 (a Set back to one), bob: 2 → 1.
  await closeAndWait(server, alice[0]!, 4)
  await closeAndWait(server, bob[1]!, 3)
  await closeAndWait(server, alice[2]!, 2)
  await stillDelivered(t, server, [alice[1]!, bob[0]!], 'after interleaved closes')

  t.equal(await server.app.eventSocket.revoke('alice'), 1, 'alice\'s one left')
  t.same(await closedOf(alice[1]!), REVOKED)
  await stillDelivered(t, server, [bob[0]!], 'bob after alice\'s revocation')
  const bob2 = await connect(t, server, 'bob')
  await stillDelivered(t, server, [bob[0]!, bob2], 'bob with a second connection again')
  t.equal(await server.app.eventSocket.revoke('alice'), 0, 'alice has none left')
  t.equal(bob[0]!.ws.readyState, WebSocket.OPEN, 'bob untouched by alice\'s revocations')

  const carol = await connect(t, server, 'carol')
  t.equal(await server.app.eventSocket.revoke('bob'), 2)
  for (const client of [bob[0]!, bob2]) t.same(await closedOf(client), REVOKED)
  await stillDelivered(t, server, [carol], 'carol after bob\'s revocation')
})
