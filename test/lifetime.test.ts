import t from 'tap'
import WebSocket from 'ws'
import { delay, openClient, startServer } from './helpers/server.js'
import { runScript, waitFor, within } from './helpers/wait.js'

t.test('expiring arrives ahead of exp, and the socket closes with 4001 at exp', async (t) => {
  const server = await startServer(t, { expiryNoticeMs: 1000 })
  const client = await openClient(t, server, { token: server.sign({ sub: 'u1' }, { expiresIn: 2 }) })
  const hello = client.messages[0]!
  const expiring = await client.next((m) => m.op === 'expiring', { timeout: 3000 })
  t.equal(expiring.expiresAt, hello.expiresAt)
  t.ok(Date.now() < hello.expiresAt, 'the notice comes before exp')
  const { code } = await client.closed
  t.equal(code, 4001)
  t.ok(Date.now() >= hello.expiresAt - 50, 'closed at exp')
})

t.test('an auth refresh keeps the socket open past the old expiry', async (t) => {
  const server = await startServer(t, { expiryNoticeMs: 1000 })
  const client = await openClient(t, server, { token: server.sign({ sub: 'u1', role: 'admin' }, { expiresIn: 2 }) })
  await client.subscribe('k.*')
  const oldExpiry = client.messages[0]!.expiresAt as number
  await client.next((m) => m.op === 'expiring', { timeout: 3000 })
  client.send({ op: 'auth', id: 50, token: server.sign({ sub: 'u1', role: 'admin' }, { expiresIn: 60 }) })
  const ok = await client.next((m) => m.id === 50)
  t.equal(ok.op, 'ok')
  t.ok(ok.expiresAt > oldExpiry)
  // Time is what is tested: the connection must outlive the old token's exp.
  await delay(oldExpiry - Date.now() + 300)
  t.equal(client.ws.readyState, WebSocket.OPEN, 'still open past the old exp')
  await server.app.publish('k.x', 1)
  t.equal((await client.next((m) => m.op === 'event')).data, 1)
})

t.test('auth with a bad token, or another user\'s token, is BAD_TOKEN and changes nothing', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  client.send({ op: 'auth', id: 1, token: 'garbage' })
  t.equal((await client.next((m) => m.id === 1)).code, 'BAD_TOKEN')
  client.send({ op: 'auth', id: 2, token: server.sign({ sub: 'someone-else' }) })
  const other = await client.next((m) => m.id === 2)
  t.equal(other.code, 'BAD_TOKEN')
  t.match(other.message, /another user/)
  client.send({ op: 'auth', id: 3, token: server.sign({ sub: 'u1' }, { expiresIn: -10 }) })
  t.equal((await client.next((m) => m.id === 3)).code, 'BAD_TOKEN')
  t.equal(client.ws.readyState, WebSocket.OPEN)
})

t.test('a refresh whose claims no longer allow a subscription ends it, naming it, and keeps the rest', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server, { sub: '7', role: 'admin' })
  await client.subscribe('user.7.inbox')
  await client.subscribe('orders.*')
  client.send({ op: 'auth', id: 9, token: server.sign({ sub: '7', role: 'user' }) })
  const ended = await client.next((m) => m.op === 'error' && m.topic === 'orders.*')
  t.equal(ended.code, 'FORBIDDEN')
  t.equal((await client.next((m) => m.id === 9)).op, 'ok')
  await server.app.publish('orders.created', 1)
  await server.app.publish('user.7.inbox', 2)
  // Published second, user.7.inbox is the sentinel: an orders.created sent to this connection would have come first.
  await client.next((m) => m.op === 'event' && m.topic === 'user.7.inbox')
  t.same(client.events().map((e) => e.topic), ['user.7.inbox'])
})

t.test('a connection that does not answer pings is terminated after a heartbeat', async (t) => {
  const server = await startServer(t, { heartbeatMs: 200 })
  const client = await openClient(t, server)
  // ws answers pings automatically; pausing the socket stops it from reading them.
  const answering = await openClient(t, server, { sub: 'u2' })
  client.ws.pause()
  const paused = Date.now()
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'the silent connection to be dropped', timeoutMs: 5000 })
  // A missed ping is seen at the next heartbeat: between one and two of them after the pause.
  t.ok(Date.now() - paused >= 200 - 20, `dropped after a heartbeat (${Date.now() - paused} ms)`)
  t.equal(answering.ws.readyState, WebSocket.OPEN, 'the answering one stays')
  t.equal((await answering.subscribe('still.here')).op, 'ok', 'and the server still serves it')
  client.ws.resume()
  t.equal((await within(client.closed, { what: 'the silent client to see its connection cut' })).code, 1006, 'the silent one was terminated, not closed')
})

t.test('app.close() closes every socket with 1001, promptly, and publish rejects afterwards', async (t) => {
  const server = await startServer(t)
  const clients = await Promise.all([1, 2, 3].map((n) => openClient(t, server, { sub: `u${n}` })))
  for (const client of clients) await client.subscribe('x')
  const started = Date.now()
  await server.app.close()
  for (const client of clients) t.equal((await within(client.closed, { what: 'the client\'s close' })).code, 1001)
  t.ok(Date.now() - started < 1500, 'closed promptly')
  await t.rejects(server.app.publish('x', 1), { code: 'FST_EVSOCK_CLOSED' })
})

t.test('after app.close() the process keeps no handle: a process that ran a server with clients exits by itself', async (t) => {
  // Only a process can show it: this one never calls process.exit, so a
  // timer, socket or interval the plugin left behind keeps it running past
  // the bound. Its clients are the test helpers, closed by the server.
  const child = runScript(t, `
    import { openClient, startServer } from './test/helpers/server.ts'
    const t = { teardown () {} }
    const server = await startServer(t, { heartbeatMs: 1000, expiryNoticeMs: 1000 })
    const clients = await Promise.all([1, 2, 3].map((n) => openClient(t, server, { sub: 'u' + n, token: server.sign({ sub: 'u' + n, role: 'admin' }, { expiresIn: 60 }) })))
    for (const client of clients) await client.subscribe('x')
    await server.app.publish('x', 1)
    await server.app.close()
    const codes = await Promise.all(clients.map(async (client) => (await client.closed).code))
    process.stdout.write(JSON.stringify({ codes, resources: process.getActiveResourcesInfo() }) + '\\n')
  `)
  const { codes, resources } = await child.firstLine as { codes: number[], resources: string[] }
  t.same(codes, [1001, 1001, 1001], 'every client was closed with 1001')
  t.comment(`resources still active right after the close: ${resources.join(', ')}`)
  t.equal(await child.exited('the child to exit by itself after app.close() (a handle left open keeps it alive)', 5000), 0, 'it exited, cleanly')
})

t.test('revoke closes every connection of one user with 4001 and leaves the others', async (t) => {
  const server = await startServer(t)
  const first = await openClient(t, server, { sub: 'mallory' })
  const second = await openClient(t, server, { sub: 'mallory' })
  const other = await openClient(t, server, { sub: 'alice' })
  t.equal(await server.app.eventSocket.revoke('mallory'), 2)
  for (const client of [first, second]) t.same(await client.closed, { code: 4001, reason: 'token revoked' })
  t.equal(other.ws.readyState, WebSocket.OPEN)
  t.equal(await server.app.eventSocket.revoke('nobody'), 0)
})
