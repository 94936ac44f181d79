import t, { type Test } from 'tap'
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

interface Scenario {
  count: number
  /** Client i negotiates compression when true. */
  deflate: (i: number) => boolean
  /** Events client i gets alone before the burst: its seqs differ from its neighbours'. */
  lead: (i: number) => number
  sizes: number[]
  history: boolean
}

/** Runs `scenario`; returns how many live clients got a wrong frame, with the first few described, and the burst's delivery time. */
async function runScenario (t: Test, scenario: Scenario): Promise<{ live: number, bad: number, problems: string[], burstMs: number }> {
  const { count, deflate, lead, sizes, history } = scenario
  const server = await startServer(t, { compression: true, handshakesPerMinute: 100_000, window: 1000, history })
  const token = server.sign({ sub: 'shared', role: 'admin' })
  const clients = Array.from({ length: count }, (_, i) => open(server.url, token, i % 2 === 0 ? 'json' : 'msgpack', deflate(i)))
  t.teardown(() => { for (const client of clients) client.ws.terminate() })
  await waitFor(() => clients.every((client) => client.messages.some((message) => message.op === 'hello')), { what: `${count} hellos`, timeoutMs: 30_000 })
  const deflating = clients.filter((client) => client.ws.extensions.includes('permessage-deflate')).length
  t.equal(deflating, clients.filter((_, i) => deflate(i)).length, `${deflating} sockets negotiated compression (SendFramer), the rest write frames directly`)
  for (const [i, client] of clients.entries()) {
    for (const request of [{ op: 'sub', id: 1, topic: 'sf.all' }, { op: 'sub', id: 2, topic: `sf.own.${i}` }]) {
      client.ws.send(client.format === 'msgpack' ? pack(request) : JSON.stringify(request))
    }
  }
  await waitFor(() => clients.every((client) => client.messages.filter((message) => message.op === 'ok').length >= 2),
    { what: 'every client subscribed twice', timeoutMs: 30_000, detail: () => JSON.stringify(clients.find((client) => client.messages.filter((message) => message.op === 'ok').length < 2)?.messages.slice(0, 4)) })
  for (let i = 0; i < count; i++) for (let k = 0; k < lead(i); k++) await server.app.publish(`sf.own.${i}`, { own: k })
  await waitFor(() => clients.every((client, i) => client.messages.filter((message) => message.op === 'event').length === lead(i)), { what: 'the desynchronising events', timeoutMs: 30_000 })

  const burst = sizes.map((size, n) => ({ n, fill: String.fromCharCode(97 + n).repeat(size) }))
  const began = performance.now()
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
    { what: 'the sentinel at every live client', timeoutMs: 60_000 })
  const burstMs = performance.now() - began

  let bad = 0
  const problems: string[] = []
  /** Each burst event's pos, as the first live client got it: every client must get the same. */
  const positions = new Map<number, unknown>()
  for (const [i, client] of clients.entries()) {
    if (client.closing) continue
    const events = client.messages.filter((message) => message.op === 'event')
    const seqs = events.map((event) => event.seq as number)
    const consecutive = seqs.every((seq, k) => k === 0 || seq === (seqs[k - 1] as number) + 1)
    const got = events.filter((event) => event.topic === 'sf.all' && event.data?.sentinel !== true)
    const intact = got.length === burst.length && got.every((event, n) => event.data?.n === n && event.data?.fill === burst[n]!.fill)
    const placed = got.every((event, n) => {
      if (!history) return event.pos === undefined
      if (typeof event.pos !== 'string') return false
      if (!positions.has(n)) positions.set(n, event.pos)
      return positions.get(n) === event.pos
    })
    if (!consecutive || !intact || !placed) {
      bad++
      if (problems.length < 3) problems.push(`client ${i} (${client.format}, deflate ${String(deflate(i))}): seqs ${seqs.join(',')}, burst ${got.map((event) => `${String(event.data?.n)}:${String(event.data?.fill?.length)}@${String(event.pos)}`).join(',')}`)
    }
  }
  return { live: live.length, bad, problems, burstMs }
}

t.test('sockets of one turn with distinct seqs, both formats, mixed compression, some closing, events of every header size', async (t) => {
  const result = await runScenario(t, { count: 300, deflate: (i) => i % 3 === 0, lead: (i) => i % 7, sizes: [10, 3000, 5000, 70_000, 150_000], history: false })
  t.equal(result.bad, 0, `every live client (${result.live}) got seq +1 and the burst intact${result.problems.length > 0 ? `: ${result.problems.join('; ')}` : ''}`)
})

t.test('1,000 sockets, no two neighbours alike (no frame shared), history on: seq +1, data intact, one pos per event', async (t) => {
  const result = await runScenario(t, { count: 1000, deflate: (i) => i % 10 === 0, lead: (i) => i % 13, sizes: [10, 5000, 70_000], history: true })
  t.comment(`1,000 sockets, history on: the burst and its sentinel reached ${result.live} live clients in ${result.burstMs.toFixed(0)} ms`)
  t.equal(result.bad, 0, `every live client (${result.live}) got seq +1, the burst intact and the same pos per event${result.problems.length > 0 ? `: ${result.problems.join('; ')}` : ''}`)
})
