import t from 'tap'
import WebSocket from 'ws'
import { waitFor } from './helpers/wait.js'
import { watchProcess } from './helpers/process.js'
import { delay, openClient, startServer, type Message } from './helpers/server.js'

t.test('an event published from a route handler reaches a JSON and a MessagePack client', async (t) => {
  const server = await startServer(t, {}, (app) => {
    app.post('/orders', async (request) => {
      const { id } = await app.publish('orders.created', request.body)
      return { id }
    })
  })
  const json = await openClient(t, server, { format: 'json' })
  const msgpack = await openClient(t, server, { format: 'msgpack' })
  t.equal((await json.subscribe('orders.*')).op, 'ok')
  t.equal((await msgpack.subscribe('orders.*')).op, 'ok')
  const response = await server.app.inject({ method: 'POST', url: '/orders', payload: { sku: 'ABC', qty: 2 } })
  const { id } = response.json()
  for (const client of [json, msgpack]) {
    const event = await client.next((m) => m.op === 'event')
    t.same(event, { op: 'event', seq: 1, topic: 'orders.created', id, data: { sku: 'ABC', qty: 2 } }, client.format)
  }
})

t.test('seq starts at 1 and grows by one per event, whatever the topic', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  await client.subscribe('a.*')
  await client.subscribe('b.*')
  await server.app.publish('a.one', 1)
  await server.app.publish('b.two', 2)
  await server.app.publish('a.three', 3)
  await client.next(() => client.events().length === 3)
  t.same(client.events().map((e) => [e.seq, e.topic, e.data]), [[1, 'a.one', 1], [2, 'b.two', 2], [3, 'a.three', 3]])
})

t.test('* and # subscriptions receive exactly the topics they match', async (t) => {
  const server = await startServer(t)
  const star = await openClient(t, server)
  const hash = await openClient(t, server)
  await star.subscribe('orders.*')
  await hash.subscribe('orders.#')
  for (const topic of ['orders', 'orders.created', 'orders.eu.created', 'invoices.created', 'orders.sentinel']) await server.app.publish(topic, topic)
  for (const client of [star, hash]) await client.next((e) => e.topic === 'orders.sentinel')
  t.same(star.events().map((e) => e.topic), ['orders.created', 'orders.sentinel'])
  t.same(hash.events().map((e) => e.topic), ['orders', 'orders.created', 'orders.eu.created', 'orders.sentinel'])
})

t.test('a connection whose several patterns match an event receives it once', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  for (const pattern of ['orders.*', 'orders.#', '#', 'orders.created']) t.equal((await client.subscribe(pattern)).op, 'ok')
  await server.app.publish('orders.created', { n: 1 })
  await server.app.publish('orders.updated', { n: 2 })
  await server.app.publish('orders.sentinel', { n: 3 })
  await client.next((e) => e.topic === 'orders.sentinel')
  t.same(client.events().map((e) => e.data), [{ n: 1 }, { n: 2 }, { n: 3 }])
})

t.test('subscribing twice to a pattern is a no-op that still answers ok', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  t.equal((await client.subscribe('x.*', 10)).op, 'ok')
  t.equal((await client.subscribe('x.*', 11)).op, 'ok')
  t.equal(server.app.eventSocket.stats().subscriptions, 1)
  await server.app.publish('x.y', 1)
  await server.app.publish('x.sentinel', 2)
  await client.next((e) => e.topic === 'x.sentinel')
  t.same(client.events().map((e) => e.data), [1, 2], 'each event once')
})

t.test('unsub stops delivery and answers ok', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  await client.subscribe('x.*')
  await client.subscribe('sentinel.*')
  client.send({ op: 'unsub', id: 99, topic: 'x.*' })
  t.equal((await client.next((m) => m.id === 99)).op, 'ok')
  await server.app.publish('x.y', 1)
  await server.app.publish('sentinel.x', 2)
  await client.next((e) => e.topic === 'sentinel.x')
  t.same(client.events().map((e) => e.data), [2], 'nothing on x.* before the sentinel')
  t.equal(server.app.eventSocket.stats().patterns, 1, 'the last subscriber leaving unbinds the pattern: only sentinel.* is left')
})

t.test('authorize decides each subscription; the default allows own user topics and admins', async (t) => {
  const server = await startServer(t)
  const user = await openClient(t, server, { sub: '42', role: 'user' })
  t.equal((await user.subscribe('user.42.inbox')).op, 'ok')
  t.equal((await user.subscribe('user.42.#')).op, 'ok')
  const refused = await user.subscribe('user.43.inbox', 7)
  t.same(refused, { op: 'error', id: 7, code: 'FORBIDDEN', message: 'not allowed to subscribe to user.43.inbox' })
  t.equal((await user.subscribe('orders.*')).code, 'FORBIDDEN')
  t.equal((await user.subscribe('user.*.inbox')).code, 'FORBIDDEN', 'a wildcard user word is not the own user')
  t.equal((await user.subscribe('#')).code, 'FORBIDDEN')
  const dotted = await openClient(t, server, { sub: '42.inbox', role: 'user' })
  t.equal((await dotted.subscribe('user.42.inbox')).code, 'FORBIDDEN', 'a sub with a dot gets no own topic, so it cannot reach into user 42')
  const admin = await openClient(t, server, { sub: 'ops', role: 'user', token: server.sign({ sub: 'ops', roles: ['viewer', 'admin'] }) })
  t.equal((await admin.subscribe('#')).op, 'ok', 'admin in roles')
})

t.test('an async authorize hook, and one that throws (a refusal)', async (t) => {
  const server = await startServer(t, {
    authorize: async (user, pattern, request) => {
      await delay(5)
      if (pattern === 'boom') throw new Error('hook failure')
      return request.headers.authorization !== undefined && pattern.startsWith(`team.${String(user.team)}.`)
    }
  })
  const client = await openClient(t, server, { token: server.sign({ sub: 'u1', team: 'red' }) })
  t.equal((await client.subscribe('team.red.*')).op, 'ok')
  t.equal((await client.subscribe('team.blue.*')).code, 'FORBIDDEN')
  t.equal((await client.subscribe('boom')).code, 'FORBIDDEN')
})

t.test('bad topics get BAD_TOPIC and the socket stays open', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  for (const topic of ['a..b', 'a.b*', 'with space', 'é']) {
    const answer = await client.subscribe(topic)
    t.equal(answer.code, 'BAD_TOPIC', topic)
  }
  t.equal((await client.subscribe('fine.*')).op, 'ok')
})

t.test('TOO_MANY_SUBSCRIPTIONS past maxSubscriptions', async (t) => {
  const server = await startServer(t, { maxSubscriptions: 2 })
  const client = await openClient(t, server)
  await client.subscribe('a')
  await client.subscribe('b')
  t.equal((await client.subscribe('c')).code, 'TOO_MANY_SUBSCRIPTIONS')
  t.equal((await client.subscribe('a')).op, 'ok', 'a held pattern still answers ok')
})

t.test('bad frames are answered with error, the socket stays open, and others keep receiving', async (t) => {
  const server = await startServer(t)
  const bad = await openClient(t, server)
  const good = await openClient(t, server, { sub: 'good' })
  await good.subscribe('feed.*')
  await bad.subscribe('feed.*')
  const frames: Array<[string | Buffer, Partial<Message>]> = [
    ['not json', { code: 'BAD_REQUEST' }],
    [Buffer.from([0xc1, 0xff, 0x00]), { code: 'BAD_REQUEST' }],
    ['[1,2,3]', { code: 'BAD_REQUEST' }],
    ['null', { code: 'BAD_REQUEST' }],
    ['{"op":"dance","id":5}', { code: 'BAD_REQUEST', id: 5 }],
    ['{"id":6}', { code: 'BAD_REQUEST', id: 6 }],
    ['{"op":"sub","id":"x","topic":"a"}', { code: 'BAD_REQUEST' }],
    ['{"op":"sub","id":8}', { code: 'BAD_REQUEST', id: 8 }],
    ['{"op":"ack","seq":-1}', { code: 'BAD_REQUEST' }]
  ]
  for (const [frame, expected] of frames) {
    const from = bad.messages.length
    bad.ws.send(frame, { binary: Buffer.isBuffer(frame) })
    const answer = await bad.next((m) => m.op === 'error', { from })
    t.match(answer, expected, String(frame))
    await server.app.publish('feed.tick', String(frame))
  }
  await good.next(() => good.events().length === frames.length)
  t.equal(good.events().length, frames.length, 'the well-behaved socket got every event')
  t.equal(bad.ws.readyState, WebSocket.OPEN)
  t.equal(bad.events().length, frames.length, 'the bad socket still receives too')
})

t.test('unknown fields are ignored', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server)
  client.send({ op: 'sub', id: 3, topic: 'x', extra: { deep: [1, 2] }, __proto__: { polluted: true } })
  t.equal((await client.next((m) => m.id === 3)).op, 'ok')
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

t.test('repeated bad frames close the socket with 4002', async (t) => {
  const server = await startServer(t, { maxBadFrames: 5 })
  const client = await openClient(t, server)
  for (let i = 0; i < 5; i++) client.ws.send('garbage')
  const { code } = await client.closed
  t.equal(code, 4002)
})

t.test('a frame over maxMessageBytes closes with 1009', async (t) => {
  const server = await startServer(t, { maxMessageBytes: 1024 })
  const client = await openClient(t, server)
  const other = await openClient(t, server)
  await other.subscribe('x')
  client.send({ op: 'sub', id: 1, topic: 'x', pad: 'p'.repeat(2048) })
  const { code } = await client.closed
  t.equal(code, 1009)
  await server.app.publish('x', 1)
  await other.next((m) => m.op === 'event')
  t.pass('the other socket keeps receiving')
})

t.test('a client sending faster than the rate limit is closed with 4029', async (t) => {
  const server = await startServer(t, { rateLimit: 10, rateBurst: 20 })
  const client = await openClient(t, server)
  for (let i = 0; i < 40; i++) client.send({ op: 'ack', seq: 0 })
  const { code } = await client.closed
  t.equal(code, 4029)
})

t.test('acks that move the window forward do not count toward the rate limit', async (t) => {
  const server = await startServer(t, { rateLimit: 5, rateBurst: 5, window: 1 })
  const client = await openClient(t, server)
  await client.subscribe('r.*')
  client.ackEach()
  for (let i = 0; i < 40; i++) await server.app.publish('r.e', i)
  await client.next(() => client.events().length === 40)
  t.equal(client.ws.readyState, WebSocket.OPEN, '40 acks in well under a second, at a rate limit of 5/s, and still open')
})

t.test('MessagePack frames decode with the same fields, and a text frame on a MessagePack socket is BAD_REQUEST', async (t) => {
  const server = await startServer(t)
  const client = await openClient(t, server, { format: 'msgpack' })
  t.equal((await client.subscribe('m.*')).op, 'ok')
  client.ws.send('{"op":"sub","id":4,"topic":"n"}')
  t.equal((await client.next((m) => m.op === 'error')).code, 'BAD_REQUEST')
  await server.app.publish('m.x', { big: 2 ** 40, text: 'ü' })
  t.same((await client.next((m) => m.op === 'event')).data, { big: 2 ** 40, text: 'ü' })
})

t.test('frames of every length class arrive intact, with and without permessage-deflate', async (t) => {
  const sizes = [10, 200, 70_000, 150_000] // 7-bit, 16-bit and 64-bit WebSocket length fields
  for (const compression of [false, true]) {
    const server = await startServer(t, { compression })
    for (const format of ['json', 'msgpack'] as const) {
      const client = await openClient(t, server, { format })
      t.equal(client.ws.extensions.includes('permessage-deflate'), compression, `${format}: deflate negotiated = ${compression}`)
      await client.subscribe('size.*')
      for (const size of sizes) await server.app.publish('size.x', { text: 'y'.repeat(size) })
      await client.next(() => client.events().length === sizes.length)
      t.same(client.events().map((e) => e.data.text.length), sizes, `${format}, compression ${compression}`)
      t.same(client.events().map((e) => e.seq), [1, 2, 3, 4])
    }
  }
})

t.test('with compression, frames over 1 KB are deflated and smaller ones are not', async (t) => {
  const server = await startServer(t, { compression: true })
  const client = await openClient(t, server)
  await client.subscribe('z.*')
  const tcp = (client.ws as unknown as { _socket: { bytesRead: number } })._socket
  const bytesFor = async (text: string): Promise<number> => {
    const before = tcp.bytesRead
    const count = client.events().length
    await server.app.publish('z.x', text)
    await client.next(() => client.events().length === count + 1)
    return tcp.bytesRead - before
  }
  t.ok(await bytesFor('a'.repeat(500)) > 500, 'a 500-byte event travels as is')
  t.ok(await bytesFor('a'.repeat(20_000)) < 2000, 'a 20 KB repetitive event travels deflated')
})

t.test('a socket whose flush throws is closed with 1011 and the others keep receiving', async (t) => {
  const failures = watchProcess(t)
  const server = await startServer(t)
  // Opened and subscribed first, so that the hub flushes it before the others.
  const broken = await openClient(t, server)
  await broken.subscribe('f.*')
  const [serverSide] = server.app.websocketServer.clients as Set<WebSocket>
  const tcp = (serverSide as unknown as { _socket: { write: (...args: unknown[]) => boolean } })._socket
  const write = tcp.write
  // Fails once (the event batch), so that the close frame that follows still goes out.
  tcp.write = function (this: unknown) {
    tcp.write = write
    throw new Error('write failed')
  }
  const others = [await openClient(t, server, { sub: 'u2' }), await openClient(t, server, { sub: 'u3', format: 'msgpack' })]
  for (const client of others) await client.subscribe('f.*')
  await server.app.publish('f.one', 1)
  let closeCode: number | undefined
  broken.closed.then(({ code }) => { closeCode = code }, () => {})
  await waitFor(() => closeCode !== undefined, { what: 'the failing socket to close', timeoutMs: 5000 })
  t.equal(closeCode, 1011, 'the failing socket is closed with internal error')
  for (const client of others) t.equal((await client.next((m) => m.op === 'event')).data, 1, `${client.format} socket got the event`)
  await server.app.publish('f.two', 2)
  for (const client of others) t.equal((await client.next((m) => m.op === 'event' && m.seq === 2)).data, 2, `${client.format} socket keeps receiving`)
  t.same(failures, [], 'nothing escaped to the process')
})
