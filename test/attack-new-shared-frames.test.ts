import t from 'tap'
import WebSocket from 'ws'
import { pack, unpack } from 'msgpackr'
import { startServer, type Message } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// Red-team attack on SharedFrames (lib/framers.ts): one frame per (event, seq,
// format) shared by the sockets of one flush turn. Here the sockets of one
// turn disagree on everything the cache keys on: their seqs differ (each got
// a different number of events before), JSON and MessagePack alternate, some
// negotiated per-message compression (SendFramer) and the others did not
// (DirectFramer), some close during the turn, and the events span the
// 7-bit, 16-bit and 64-bit length headers. Every frame each client gets must
// be its own: seq strictly +1 and data intact.

interface Client { ws: WebSocket, messages: Message[], format: 'json' | 'msgpack', closing: boolean }

function open (url: string, token: string, format: 'json' | 'msgpack', deflate: boolean): Client {
  const ws = new WebSocket(url, format === 'msgpack' ? ['evsock.v1.msgpack'] : [], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: deflate })
  const client: Client = { ws, messages: [], format, closing: false }
  ws.on('message', (data: Buffer, binary) => { client.messages.push(binary ? unpack(data) : JSON.parse(data.toString())) })
  ws.on('error', () => {})
  return client
}

t.test('sockets of one turn with distinct seqs, both formats, mixed compression, some closing, events of every header size', async (t) => {
  const server = await startServer(t, { compression: true, handshakesPerMinute: 100_000, window: 1000 })
  const count = 300
  const token = server.sign({ sub: 'shared', role: 'admin' })
  const clients = Array.from({ length: count }, (_, i) => open(server.url, token, i % 2 === 0 ? 'json' : 'msgpack', i % 3 === 0))
  t.teardown(() => { for (const client of clients) client.ws.terminate() })
  await waitFor(() => clients.every((client) => client.messages.some((message) => message.op === 'hello')), { what: `${count} hellos`, timeoutMs: 20_000 })
  const deflating = clients.filter((client) => client.ws.extensions.includes('permessage-deflate')).length
  t.equal(deflating, Math.ceil(count / 3), 'a third of the sockets negotiated compression (SendFramer), the rest write frames directly')
  for (const [i, client] of clients.entries()) {
    for (const request of [{ op: 'sub', id: 1, topic: 'sf.all' }, { op: 'sub', id: 2, topic: `sf.own.${i}` }]) {
      client.ws.send(client.format === 'msgpack' ? pack(request) : JSON.stringify(request))
    }
  }
  await waitFor(() => clients.every((client) => client.messages.filter((message) => message.op === 'ok').length >= 2),
    { what: 'every client subscribed twice', timeoutMs: 20_000, detail: () => JSON.stringify(clients.find((client) => client.messages.filter((message) => message.op === 'ok').length < 2)?.messages.slice(0, 4)) })
  // Desynchronise the seqs: client i gets i % 7 events of its own first.
  for (let i = 0; i < count; i++) for (let k = 0; k < i % 7; k++) await server.app.publish(`sf.own.${i}`, { own: k })
  await waitFor(() => clients.every((client, i) => client.messages.filter((message) => message.op === 'event').length === i % 7), { what: 'the desynchronising events', timeoutMs: 20_000 })

  const sizes = [10, 3000, 5000, 70_000, 150_000]
  const burst = sizes.map((size, n) => ({ n, fill: String.fromCharCode(97 + n).repeat(size) }))
  // One turn: every publish, then some sockets close before the flush.
  const published = burst.map((data) => server.app.publish('sf.all', data))
  for (let i = 5; i < count; i += 50) {
    clients[i]!.closing = true
    clients[i]!.ws.terminate()
  }
  await Promise.all(published)
  await server.app.publish('sf.all', { sentinel: true })
  const live = clients.filter((client) => !client.closing)
  await waitFor(() => live.every((client) => client.messages.some((message) => message.op === 'event' && message.data?.sentinel === true)),
    { what: 'the sentinel at every live client', timeoutMs: 30_000 })

  let bad = 0
  const problems: string[] = []
  for (const [i, client] of clients.entries()) {
    if (client.closing) continue
    const events = client.messages.filter((message) => message.op === 'event')
    const seqs = events.map((event) => event.seq as number)
    const consecutive = seqs.every((seq, k) => k === 0 || seq === (seqs[k - 1] as number) + 1)
    const got = events.filter((event) => event.topic === 'sf.all' && event.data?.sentinel !== true).map((event) => event.data as { n: number, fill: string })
    const intact = got.length === burst.length && got.every((data, n) => data.n === n && data.fill === burst[n]!.fill)
    if (!consecutive || !intact) {
      bad++
      if (problems.length < 3) problems.push(`client ${i} (${client.format}, deflate ${String(i % 3 === 0)}): seqs ${seqs.join(',')}, burst ${got.map((data) => `${data.n}:${data.fill?.length}`).join(',')}`)
    }
  }
  t.equal(bad, 0, `every live client (${live.length}) got seq +1 and the burst intact${problems.length > 0 ? `: ${problems.join('; ')}` : ''}`)
})
