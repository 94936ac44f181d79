import t, { type Test } from 'tap'
import { connect } from 'amqplib'
import { brokerOptions, brokerUrl, privateVhost, rabbitmqctl, requireBroker } from './helpers/broker.js'
import { gc } from './helpers/gc.js'
import { clientFrame, closeCodeOf, rawWebSocket } from './helpers/raw-socket.js'
import { openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// End-to-end attack on the runs of frames shared within one turn (526c11a,
// lib/framers.ts SharedFrames): bursts that reach many sockets of mixed
// formats and compression through the real plugin, with the broker in the
// way, foreign and malformed messages among the valid ones, a silent peer,
// a broker outage, and sockets whose seqs alternate. The framer-level attack
// is test/attack-shared-runs.test.ts; this is the whole path. Absence is
// proved with a sentinel published after, never with a sleep.

const MiB = 1024 * 1024

/** Every event of `client` is one of `expected`, in that order, contiguous (a suffix for a late subscriber unless `whole`), seqs from 1 by 1, each once. */
function checkStream (t: Test, client: TestClient, expected: string[], label: string, whole = true): void {
  const events = client.events()
  const ids = events.map((event) => event.id as string)
  const seqs = events.map((event) => event.seq as number)
  const start = whole ? 0 : expected.indexOf(ids[0] ?? '')
  t.ok(start >= 0, `${label}: its first event is one published`)
  t.same(ids, expected.slice(start), `${label}: every event from its first on, exactly once, in order (${ids.length})`)
  t.same(seqs, seqs.map((_, i) => i + 1), `${label}: seqs 1, 2, 3, ... with no gap`)
}

async function allGot (clients: TestClient[], id: string, what: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(() => clients.every((client) => client.events().some((event) => event.id === id)), {
    what,
    timeoutMs,
    detail: () => clients.map((client) => `${client.format}:${client.events().length}/${client.ws.readyState}`).join(' ')
  })
}

if (await requireBroker(t)) {
  t.test('RabbitMQ bursts from another instance, with foreign and malformed messages inside: every client of every format and compression gets every valid event once, in order', async (t) => {
    const broker = brokerOptions(t)
    const common = { broker, maxEventBytes: 4096, handshakesPerMinute: 0 }
    const publisher = await startServer(t, common)
    const plain = await startServer(t, { ...common, compression: false })
    const deflate = await startServer(t, { ...common, compression: true })

    const clients: TestClient[] = []
    const open = async (server: TestServer, format: 'json' | 'msgpack', patterns: string[]): Promise<TestClient> => {
      const client = await openClient(t, server, { format })
      for (const pattern of patterns) t.equal((await client.subscribe(pattern)).op, 'ok', `subscribed to ${pattern}`)
      client.ackEach()
      clients.push(client)
      return client
    }
    const early: TestClient[] = []
    for (const server of [plain, deflate]) {
      for (const format of ['json', 'msgpack'] as const) {
        early.push(await open(server, format, ['burst.#']))
        early.push(await open(server, format, ['burst.#']))
        // The same topic matched by three patterns of one socket: still once.
        early.push(await open(server, format, ['burst.#', 'burst.*', 'burst.a']))
      }
    }
    t.ok(deflate.app.websocketServer.clients.size > 0 && [...deflate.app.websocketServer.clients].every((ws) => ws.extensions !== ''), 'the deflate instance negotiated compression')

    const expected: string[] = []
    const burst = async (b: number, size: number): Promise<void> => {
      const results = await Promise.all(Array.from({ length: size }, (_, i) =>
        publisher.app.publish('burst.a', { b, i, pad: i % 3 === 0 ? 'p'.repeat(1500 + i) : '' })))
      expected.push(...results.map((result) => result.id))
    }
    await burst(0, 30)
    await allGot(early, expected.at(-1) as string, 'the first burst everywhere')
    // Late subscribers: a different first seq, so their runs cannot be the early sockets' ones.
    const late: TestClient[] = []
    for (const server of [plain, deflate]) {
      for (const format of ['json', 'msgpack'] as const) late.push(await open(server, format, ['burst.#']))
    }
    // Subscribing while a burst streams in: the answer (a control message) and events share one turn's outbox.
    const mid: TestClient[] = []
    for (const server of [plain, deflate]) {
      for (const format of ['json', 'msgpack'] as const) {
        const client = await openClient(t, server, { format })
        client.ackEach()
        clients.push(client)
        mid.push(client)
      }
    }
    const multi = early.filter((_, i) => i % 3 === 2)
    for (let b = 1; b <= 8; b++) {
      const sending = burst(b, 25)
      if (b === 3) for (const [i, client] of mid.entries()) client.send({ op: 'sub', id: 9000 + i, topic: 'burst.#' })
      // Dropping one of three matching patterns mid-burst: the others still match, every event still once.
      if (b === 5) for (const [i, client] of multi.entries()) client.send({ op: 'unsub', id: 9100 + i, topic: 'burst.#' })
      await sending
    }

    // Foreign producer: valid events and poison on one channel, in a known order.
    const connection = await connect(brokerUrl)
    t.teardown(() => connection.close().catch(() => {}))
    const channel = await connection.createConfirmChannel()
    const nested = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth)
    const poison: Array<{ key: string, body: Buffer, props?: Record<string, unknown> }> = [
      { key: 'burst.a', body: Buffer.from('not json'), props: { contentType: 'application/json' } },
      { key: 'burst.a', body: Buffer.from([0x82, 0xa1, 0x61, 0x01]), props: { contentType: 'application/msgpack' } },
      { key: 'burst.a', body: Buffer.from('{"a":') },
      { key: 'burst.a', body: Buffer.from(nested(65)) },
      { key: 'burst.a', body: Buffer.from(JSON.stringify('x'.repeat(5000))) },
      { key: 'burst.a', body: Buffer.from('1'), props: { messageId: undefined } },
      { key: 'burst.a', body: Buffer.from('1'), props: { messageId: '' } },
      { key: 'burst..a', body: Buffer.from('1') }
    ]
    let foreign = 0
    for (let round = 0; round < 4; round++) {
      for (const bad of poison) {
        const id = `foreign-${foreign++}`
        channel.publish(broker.exchange, 'burst.a', Buffer.from(JSON.stringify({ foreign: id })), { messageId: id, contentType: 'text/plain' })
        expected.push(id)
        channel.publish(broker.exchange, bad.key, bad.body, { messageId: `bad-${foreign}`, ...bad.props })
      }
      // A control key (another instance's revocation of nobody) among the events: for the instances, never for a socket.
      channel.publish(broker.exchange, '$evsock.revoke', Buffer.from(JSON.stringify({ sub: 'nobody', until: Date.now() + 1000 })), { messageId: `ctl-${round}` })
      channel.publish(broker.exchange, '$evsock.unknown', Buffer.from('{}'), { messageId: `ctl-x-${round}` })
    }
    await channel.waitForConfirms()
    await burst(9, 40)
    const sentinel = (await publisher.app.publish('burst.a', { sentinel: true })).id
    expected.push(sentinel)
    await allGot(clients, sentinel, 'the sentinel on every client')

    for (const [i, client] of early.entries()) checkStream(t, client, expected, `early ${i} (${client.format})`)
    for (const [i, client] of late.entries()) checkStream(t, client, expected, `late ${i} (${client.format})`, false)
    for (const [i, client] of mid.entries()) {
      checkStream(t, client, expected, `subscribed mid-burst ${i} (${client.format})`, false)
      t.ok(client.messages.findIndex((m) => m.op === 'ok' && m.id === 9000 + i) < client.messages.findIndex((m) => m.op === 'event'), 'its answer came before its first event')
    }
    for (const client of multi) t.ok(client.messages.some((m) => m.op === 'ok' && m.id >= 9100), 'the unsub was answered')
    for (const client of clients) t.ok(client.ws.readyState === client.ws.OPEN, 'still open')
    for (const server of [plain, deflate]) {
      t.equal(server.app.eventSocket.stats().eventsDropped, poison.length * 4, 'every malformed message counted as dropped, nothing else')
    }
  })

  t.test('a broker outage in the middle of bursts: each publish resolves and is delivered once in order, or rejects with FST_EVSOCK_*', async (t) => {
    const url = await privateVhost(t)
    const broker = brokerOptions(t, { url, publishTimeoutMs: 8000 })
    const publisher = await startServer(t, { broker, handshakesPerMinute: 0 })
    const subscriber = await startServer(t, { broker, handshakesPerMinute: 0 })
    const clients: TestClient[] = []
    for (const format of ['json', 'msgpack', 'json', 'msgpack'] as const) {
      const client = await openClient(t, subscriber, { format })
      t.equal((await client.subscribe('out.#')).op, 'ok')
      client.ackEach()
      clients.push(client)
    }
    const outcomes: Array<Promise<{ id?: string, code?: string }>> = []
    let dropped = false
    let dropping: Promise<void> | undefined
    let after = 0
    for (let b = 0; b < 400 && after < 30; b++) {
      for (let i = 0; i < 10; i++) {
        outcomes.push(publisher.app.publish('out.x', { b, i }).then(({ id }) => ({ id }), (error: { code?: string }) => ({ code: String(error.code) })))
      }
      if (b === 10) {
        const vhost = decodeURIComponent(new URL(url).pathname.slice(1))
        dropping = rabbitmqctl('close_all_connections', '--vhost', vhost, 'evsock burst attack').then(() => { dropped = true })
      }
      if (dropped) after++
      await new Promise((resolve) => setImmediate(resolve))
      await new Promise((resolve) => setTimeout(resolve, 3))
    }
    await dropping
    t.ok(dropped, 'the connections were dropped mid-burst')
    const results = await Promise.all(outcomes)
    const codes = [...new Set(results.filter((each) => each.id === undefined).map((each) => each.code))]
    t.ok(codes.every((code) => code?.startsWith('FST_EVSOCK_')), `rejections are typed: ${codes.join(', ')}`)
    const resolved = results.flatMap((each) => each.id === undefined ? [] : [each.id])
    t.comment(`${resolved.length} resolved, ${results.length - resolved.length} rejected`)

    let sentinel: string | undefined
    await waitFor(async () => {
      try {
        sentinel = (await publisher.app.publish('out.sentinel', {})).id
        return true
      } catch { return false }
    }, { what: 'a publish after recovery', timeoutMs: 15_000, intervalMs: 100 })
    await allGot(clients, sentinel as string, 'the sentinel after recovery')
    for (const [n, client] of clients.entries()) {
      const ids = client.events().map((event) => event.id as string)
      const seqs = client.events().map((event) => event.seq as number)
      t.same(seqs, seqs.map((_, i) => i + 1), `client ${n}: seqs +1 across the outage`)
      t.equal(new Set(ids).size, ids.length, `client ${n}: no event twice`)
      const got = new Set(ids)
      t.same(resolved.filter((id) => !got.has(id)), [], `client ${n}: no resolved publish lost`)
      const order = new Map(results.flatMap((each, i) => each.id === undefined ? [] : [[each.id, i] as const]))
      const positions = ids.filter((id) => order.has(id)).map((id) => order.get(id) as number)
      t.same(positions, [...positions].sort((a, b) => a - b), `client ${n}: in publish order`)
    }
  })
}

t.test('a silent peer among many sockets fed bursts of events up to maxEventBytes: it gets 4008, the others everything, memory bounded', async (t) => {
  const server = await startServer(t, { handshakesPerMinute: 0, maxBufferedBytes: 4 * MiB })
  const clients: TestClient[] = []
  for (let i = 0; i < 10; i++) {
    const client = await openClient(t, server, { sub: `c${i}`, format: i % 2 === 0 ? 'json' : 'msgpack' })
    await client.subscribe('big.*')
    client.ackEach()
    clients.push(client)
  }
  const silent = await rawWebSocket(server.port, '/events', { authorization: `Bearer ${server.sign({ sub: 'silent', role: 'admin' })}` })
  t.teardown(() => silent.destroy())
  const patterns = server.app.eventSocket.stats().patterns
  silent.write(clientFrame('{"op":"sub","id":1,"topic":"big.*"}'))
  await waitFor(() => server.app.eventSocket.stats().patterns > patterns || server.app.eventSocket.stats().subscriptions > 10, { what: 'the silent peer\'s subscription' })
  gc()
  const before = process.memoryUsage()
  const sizes = [200 * 1024 - 200, 64 * 1024, 20 * 1024, 150 * 1024, 100 * 1024]
  const expected: string[] = []
  // Until the silent peer is closed (64 in flight, then maxPendingEvents/Bytes or maxBufferedBytes), then five bursts more.
  let more = 5
  for (let b = 0; b < 60 && more > 0; b++) {
    if (server.app.eventSocket.stats().slowConsumerCloses > 0) more--
    // One burst: several events in one turn, the same run for every socket at the same seq.
    const results = await Promise.all(sizes.map((size, i) => server.app.publish(`big.${i}`, 'y'.repeat(size - 100))))
    expected.push(...results.map((result) => result.id))
    await waitFor(() => clients.every((client) => client.events().length >= expected.length - sizes.length * 2), { what: `the healthy clients to keep up with burst ${b}`, timeoutMs: 20_000 })
  }
  const sentinel = (await server.app.publish('big.end', 'end')).id
  expected.push(sentinel)
  await allGot(clients, sentinel, 'the sentinel on every healthy client', 30_000)
  t.equal(server.app.eventSocket.stats().slowConsumerCloses, 1, 'the silent peer, and only it, was closed as a slow consumer')
  for (const [i, client] of clients.entries()) checkStream(t, client, expected, `healthy ${i}`)
  await waitFor(() => server.app.eventSocket.stats().connections === 10, { what: 'the silent connection released', timeoutMs: 5000 })
  // Buffers are released by a full collection, sometimes only on a later one: polled, bounded.
  let grown = Infinity
  await waitFor(() => {
    gc()
    grown = (process.memoryUsage().arrayBuffers - before.arrayBuffers) / MiB
    return grown < 32
  }, { what: 'buffer memory back under 32 MiB above where it started', timeoutMs: 5000, intervalMs: 100, detail: () => `${grown.toFixed(1)} MiB above` })
  t.comment(`buffer memory ${grown.toFixed(1)} MiB above where it started`)
  t.equal([...server.app.websocketServer.clients].reduce((n, ws) => n + ws.bufferedAmount, 0), 0, 'nothing left buffered for anyone')
  // Cut off past maxBufferedBytes, its close frame may sit behind bytes it never read: 4008 or nothing, never another code.
  const code = await closeCodeOf(silent)
  t.ok(code === 4008 || code === undefined, `the silent peer reads 4008 or no close frame (${String(code)})`)
})

t.test('1,000 sockets at alternating seqs, bursts of 100 events in one turn past a window of 64, acks at different strides, one topic matched by several patterns', async (t) => {
  // A burst of 100 with a window of 64: each socket is sent a run of 64, then runs that start
  // wherever its acks left it, at other seqs than its neighbours' (acked every 20 or 32 events).
  const server = await startServer(t, { handshakesPerMinute: 0, window: 64, rateLimit: 1000, rateBurst: 1000 })
  const count = 1000
  const clients: TestClient[] = []
  for (let i = 0; i < count; i += 50) {
    clients.push(...await Promise.all(Array.from({ length: 50 }, async (_, j) => await openClient(t, server, { sub: `s${i + j}`, format: (i + j) % 4 < 2 ? 'json' : 'msgpack' }))))
  }
  for (const [i, client] of clients.entries()) {
    const stride = i % 2 === 0 ? 32 : 20
    client.ws.on('message', () => {
      const last = client.messages.at(-1)
      if (last?.op === 'event' && (last.seq % stride === 0 || last.topic === 'w.end')) client.send({ op: 'ack', seq: last.seq })
    })
  }
  const odd = clients.filter((_, i) => i % 2 === 1)
  const even = clients.filter((_, i) => i % 2 === 0)
  await Promise.all(even.map(async (client) => await client.subscribe('w.#')))
  // Warm the even sockets: their seqs are one ahead of their odd neighbours'.
  const expected: string[] = []
  expected.push((await server.app.publish('w.warm', 0)).id)
  await allGot(even, expected[0] as string, 'the warm-up event on the even sockets')
  await Promise.all(odd.map(async (client, n) => {
    await client.subscribe('w.#')
    if (n % 5 === 0) {
      // The same topic matched by three patterns of one socket.
      await client.subscribe('w.*')
      await client.subscribe('w.a')
    }
  }))
  for (let b = 0; b < 3; b++) {
    const ids = await Promise.all(Array.from({ length: 100 }, async (_, i) => (await server.app.publish('w.a', { b, i, pad: i % 7 === 0 ? 'q'.repeat(3000) : '' })).id))
    expected.push(...ids)
  }
  const sentinel = (await server.app.publish('w.end', 'end')).id
  expected.push(sentinel)
  await allGot(clients, sentinel, 'the sentinel on all 1,000 sockets', 40_000)
  let bad = 0
  for (const [i, client] of clients.entries()) {
    const want = i % 2 === 0 ? expected : expected.slice(1)
    const events = client.events()
    const ok = events.length === want.length && events.every((event, n) => event.id === want[n] && event.seq === n + 1)
    if (!ok && bad++ < 3) t.fail(`socket ${i}: ${JSON.stringify(events.slice(0, 3).map((e) => [e.seq, e.id]))}...`)
  }
  t.equal(bad, 0, 'every socket got its events once, in order, seqs +1')
  t.equal(server.app.eventSocket.stats().slowConsumerCloses, 0, 'nobody closed')
})

t.test('sockets of both formats interleaved, at one seq, sent one burst: one buffer per format for all of them, not one per socket', async (t) => {
  // The turn's runs were kept one per first event: a msgpack socket's run evicted the JSON one
  // before it, and the next JSON socket built its own again. Clients of mixed formats connect in
  // any order, so in a fan-out every socket rebuilt (and allocated) the run it should have shared.
  const server = await startServer(t, { handshakesPerMinute: 0, window: 1024 })
  const clients: TestClient[] = []
  for (let i = 0; i < 20; i++) {
    const client = await openClient(t, server, { sub: `m${i}`, format: i % 2 === 0 ? 'json' : 'msgpack' })
    await client.subscribe('share.#')
    clients.push(client)
  }
  const written = new Map<string, Set<Buffer>>([['json', new Set()], ['msgpack', new Set()]])
  for (const ws of server.app.websocketServer.clients) {
    t.equal(ws.extensions, '', 'no compression: the frames are written whole')
    const format = ws.protocol === 'evsock.v1.msgpack' ? 'msgpack' : 'json'
    const tcp = (ws as unknown as { _socket: { write: (chunk: Buffer, ...rest: unknown[]) => boolean } })._socket
    const write = tcp.write
    tcp.write = function (chunk: Buffer, ...rest: unknown[]) {
      if (Buffer.isBuffer(chunk) && chunk.length > 5000) written.get(format)?.add(chunk)
      return write.call(this, chunk, ...rest)
    }
  }
  const ids = await Promise.all(Array.from({ length: 5 }, async (_, i) => (await server.app.publish('share.x', { i, pad: 'z'.repeat(2000) })).id))
  await allGot(clients, ids.at(-1) as string, 'the burst on every socket')
  for (const client of clients) t.same(client.events().map((event) => [event.seq, event.id]), ids.map((id, i) => [i + 1, id]), `${client.format}: the burst, seqs 1 to 5`)
  t.equal(written.get('json')?.size, 1, 'the ten JSON sockets were written one shared buffer')
  t.equal(written.get('msgpack')?.size, 1, 'the ten MessagePack sockets were written one shared buffer')
})

t.test('neighbours of one format at seqs one apart, room for the whole burst: each is sent its own seqs', async (t) => {
  // The same events, the same format and length of run, only the first seq differs between
  // neighbours: a run kept for one must never be written to the other.
  const server = await startServer(t, { handshakesPerMinute: 0, window: 1024 })
  const clients: TestClient[] = []
  for (let i = 0; i < 24; i++) clients.push(await openClient(t, server, { sub: `n${i}`, format: i % 4 < 2 ? 'json' : 'msgpack' }))
  const ahead = clients.filter((_, i) => i % 2 === 0)
  for (const client of ahead) await client.subscribe('seq.#')
  const warm = (await server.app.publish('seq.warm', 0)).id
  await allGot(ahead, warm, 'the warm-up event')
  for (const [i, client] of clients.entries()) if (i % 2 === 1) await client.subscribe('seq.#')
  const ids = await Promise.all(Array.from({ length: 5 }, async (_, i) => (await server.app.publish('seq.x', { i })).id))
  await allGot(clients, ids.at(-1) as string, 'the burst on every socket')
  for (const [i, client] of clients.entries()) {
    const want = i % 2 === 0 ? [warm, ...ids] : ids
    t.same(client.events().map((event) => [event.seq, event.id]), want.map((id, n) => [n + 1, id]), `socket ${i} (${client.format}): its own seqs`)
  }
})
