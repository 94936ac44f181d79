import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { pack, unpack } from 'msgpackr'
import { startServer, type Message, type TestServer } from './helpers/server.js'
import { seededRandom } from './helpers/seeded-random.js'
import { waitFor } from './helpers/wait.js'

// Red-team attack on commit e369742 (lib/framers.ts): one framer per kind
// (direct TCP write, or ws.send with permessage-deflate) and format per
// instance (ws.send's even per process), each write given its socket. If a
// framer ever wrote to a socket other than the one it was given (the last
// one it served, another instance's), some client would get a frame meant
// for another: here every client of all four kinds (JSON or MessagePack,
// compressed or not) holds a shared topic and a private one, and must get
// exactly its own events, in publish order, numbered 1, 2, 3..., with every
// answer to its own requests once, over bursts of mixed sizes (both sides of
// the 1 KB compression threshold), on one instance and on two in one process.

type Format = 'json' | 'msgpack'
interface Kind { format: Format, deflate: boolean }
const KINDS: Kind[] = [
  { format: 'json', deflate: false }, { format: 'msgpack', deflate: false },
  { format: 'json', deflate: true }, { format: 'msgpack', deflate: true }
]

interface Client {
  name: string
  kind: Kind
  ws: WebSocket
  messages: Message[]
  /** The `n` of every event this client must get, in order. */
  expected: number[]
  /** Ids of the requests it sent. */
  requests: number[]
  /** The topic only it holds. */
  own: string
}

function open (t: Test, server: TestServer, name: string, kind: Kind): Client {
  const ws = new WebSocket(server.url, kind.format === 'msgpack' ? ['evsock.v1.msgpack'] : [], {
    headers: { authorization: `Bearer ${server.sign({ sub: name, role: 'admin' })}` },
    perMessageDeflate: kind.deflate
  })
  t.teardown(() => ws.terminate())
  const client: Client = { name, kind, ws, messages: [], expected: [], requests: [], own: '' }
  ws.on('message', (data: Buffer, binary) => {
    // The wire type must be the format's: a frame of the other format would be the other kind's framer's.
    client.messages.push(binary ? { ...unpack(data), binary: true } : { ...JSON.parse(data.toString()), binary: false })
  })
  ws.on('error', () => {})
  return client
}

function send (client: Client, request: Record<string, unknown>): void {
  client.ws.send(client.kind.format === 'msgpack' ? pack(request) : JSON.stringify(request))
}

let nextRequest = 1

async function subscribe (client: Client, topic: string): Promise<void> {
  const id = nextRequest++
  client.requests.push(id)
  send(client, { op: 'sub', id, topic })
  await waitFor(() => client.messages.some((message) => message.id === id), { what: `${client.name}'s answer to sub ${topic}` })
}

/** `count` clients of every kind, round robin, on `server`, each subscribed to `<prefix>.all` and `<prefix>.own.<i>`. */
async function openAll (t: Test, server: TestServer, prefix: string, count: number): Promise<Client[]> {
  const clients = Array.from({ length: count }, (_, i) => open(t, server, `${prefix}-${i}`, KINDS[i % KINDS.length]!))
  await waitFor(() => clients.every((client) => client.messages.some((message) => message.op === 'hello')), { what: `${prefix}: every hello` })
  for (const client of clients) {
    t.equal(client.ws.extensions.includes('permessage-deflate'), client.kind.deflate, `${client.name}: compression ${client.kind.deflate ? 'negotiated' : 'off'}`)
  }
  await Promise.all(clients.map(async (client, i) => {
    client.own = `${prefix}.own.${i}`
    await subscribe(client, `${prefix}.all`)
    await subscribe(client, client.own)
  }))
  return clients
}

/** One burst: `size` publishes in one turn, to the shared topic or to one client's own, of sizes on both sides of 1 KB. */
function burst (server: TestServer, prefix: string, clients: Client[], random: () => number, size: number, counter: { n: number }): Array<Promise<unknown>> {
  const publishes: Array<Promise<unknown>> = []
  for (let k = 0; k < size; k++) {
    const n = counter.n++
    const shared = random() < 0.5
    const owner = Math.floor(random() * clients.length)
    const fill = 'abcdefghij'[n % 10]!.repeat(random() < 0.3 ? 1500 + Math.floor(random() * 70_000) : Math.floor(random() * 200))
    for (const [i, client] of clients.entries()) if (shared || i === owner) client.expected.push(n)
    publishes.push(server.app.publish(shared ? `${prefix}.all` : clients[owner]!.own, { n, prefix, fill }))
  }
  return publishes
}

/** Everything `client` got is exactly its own: its events in order, seq 1, 2, 3..., intact, in its format; each request answered once. */
function problemsOf (client: Client, prefix: string): string[] {
  const problems: string[] = []
  const binary = client.kind.format === 'msgpack'
  for (const message of client.messages) if (message.binary !== binary) problems.push(`a ${message.binary === true ? 'binary' : 'text'} frame (${String(message.op)})`)
  const events = client.messages.filter((message) => message.op === 'event')
  const got = events.map((event) => event.data?.n as number)
  if (JSON.stringify(got) !== JSON.stringify(client.expected)) {
    const at = got.findIndex((n, i) => n !== client.expected[i])
    problems.push(`events ${got.length} (wanted ${client.expected.length}); first difference at ${at}: got ${got[at]}, wanted ${client.expected[at]}`)
  }
  for (const [i, event] of events.entries()) {
    if (event.seq !== i + 1) { problems.push(`event ${i} has seq ${String(event.seq)}`); break }
    if (event.data?.prefix !== prefix) { problems.push(`event ${i} is of ${String(event.data?.prefix)}`); break }
    const fill = event.data?.fill as string
    if (typeof fill !== 'string' || fill !== 'abcdefghij'[(event.data?.n as number) % 10]!.repeat(fill.length)) { problems.push(`event ${i} data damaged`); break }
  }
  for (const id of client.requests) {
    const answers = client.messages.filter((message) => message.id === id).length
    if (answers !== 1) problems.push(`request ${id} answered ${answers} times`)
  }
  return problems
}

async function sentinelAll (server: TestServer, prefix: string, clients: Client[], counter: { n: number }): Promise<void> {
  const n = counter.n++
  for (const client of clients) client.expected.push(n)
  await server.app.publish(`${prefix}.all`, { n, prefix, fill: 'abcdefghij'[n % 10]! })
  await waitFor(() => clients.every((client) => client.messages.some((message) => message.op === 'event' && message.data?.n === n)), {
    what: `${prefix}: the sentinel ${n} at every client`,
    timeoutMs: 20_000,
    detail: () => clients.filter((client) => !client.messages.some((message) => message.data?.n === n)).map((client) => client.name).join(', ')
  })
}

t.test('one instance, 24 clients of the four kinds, bursts with requests in flight: every client gets exactly its own frames, in order', async (t) => {
  const server = await startServer(t, { compression: true, window: 5000, maxPendingEvents: 10_000, handshakesPerMinute: 100_000, rateLimit: 100_000, rateBurst: 100_000 })
  const clients = await openAll(t, server, 'one', 24)
  const random = seededRandom(0xe369742)
  const counter = { n: 0 }
  for (let round = 0; round < 6; round++) {
    // Requests answered in the turns the bursts go out: control frames among the events, per socket.
    for (const client of clients) {
      if (random() < 0.5) {
        const id = nextRequest++
        client.requests.push(id)
        send(client, { op: random() < 0.5 ? 'sub' : 'unsub', id, topic: `one.extra.${round}` })
      }
    }
    await Promise.all(burst(server, 'one', clients, random, 20 + Math.floor(random() * 40), counter))
  }
  // The extra topics are never published to: the sentinel proves the rest arrived.
  await sentinelAll(server, 'one', clients, counter)
  const problems = clients.flatMap((client) => problemsOf(client, 'one').map((problem) => `${client.name} (${client.kind.format}${client.kind.deflate ? ', deflate' : ''}): ${problem}`))
  t.same(problems.slice(0, 10), [], `every client got exactly its own frames (${counter.n} events over ${clients.length} clients)`)
  t.ok(clients.every((client) => client.expected.length > 10), 'each client was sent a good share of them')
})

t.test('two instances in one process, same topics, bursts in the same turns: no client gets a frame of the other instance', async (t) => {
  const servers = [
    await startServer(t, { compression: true, window: 5000, maxPendingEvents: 10_000, handshakesPerMinute: 100_000 }),
    await startServer(t, { compression: true, window: 5000, maxPendingEvents: 10_000, handshakesPerMinute: 100_000 })
  ] as const
  // The same topic names on both: only the framer's socket tells them apart.
  const left = await openAll(t, servers[0], 'two', 8)
  const right = await openAll(t, servers[1], 'two', 8)
  const random = seededRandom(0x2e369742)
  const counters = [{ n: 0 }, { n: 1_000_000 }]
  for (let round = 0; round < 5; round++) {
    // Both instances' bursts in one turn, interleaved by instance as they are built.
    await Promise.all([
      ...burst(servers[0], 'two', left, random, 15 + Math.floor(random() * 30), counters[0]!),
      ...burst(servers[1], 'two', right, random, 15 + Math.floor(random() * 30), counters[1]!)
    ])
  }
  await sentinelAll(servers[0], 'two', left, counters[0]!)
  await sentinelAll(servers[1], 'two', right, counters[1]!)
  const problems = [...left, ...right].flatMap((client) => problemsOf(client, 'two').map((problem) => `${client.name}: ${problem}`))
  t.same(problems.slice(0, 10), [], 'every client of both instances got exactly its own instance\'s frames')
  t.ok(left.every((client) => client.messages.every((message) => message.op !== 'event' || (message.data?.n as number) < 1_000_000)), 'the first instance\'s clients got none of the second\'s events')
  t.ok(right.every((client) => client.messages.every((message) => message.op !== 'event' || (message.data?.n as number) >= 1_000_000)), 'and the other way round')
})

t.test('a client of each kind closes mid-burst: the others still get exactly theirs, the closed ones nothing after their close', async (t) => {
  const server = await startServer(t, { compression: true, window: 5000, maxPendingEvents: 10_000, handshakesPerMinute: 100_000 })
  const clients = await openAll(t, server, 'mid', 12)
  const random = seededRandom(0x3e369742)
  const counter = { n: 0 }
  await Promise.all(burst(server, 'mid', clients, random, 30, counter))
  await sentinelAll(server, 'mid', clients, counter)
  // The first client of each kind closes in the same turn as the next burst is published.
  const closing = clients.slice(0, 4)
  const staying = clients.slice(4)
  const beforeClose = closing.map((client) => client.messages.length)
  const publishes = burst(server, 'mid', staying, random, 40, counter)
  for (const client of closing) client.ws.close()
  // The closing ones are subscribed too: they may have got this burst's events before their close; never anything else.
  await Promise.all(publishes)
  await waitFor(() => closing.every((client) => client.ws.readyState === WebSocket.CLOSED), { what: 'the closing clients to be closed' })
  await sentinelAll(server, 'mid', staying, counter)
  const problems = staying.flatMap((client) => problemsOf(client, 'mid').map((problem) => `${client.name}: ${problem}`))
  t.same(problems.slice(0, 10), [], 'the staying clients got exactly their own frames')
  for (const [i, client] of closing.entries()) {
    const after = client.messages.slice(beforeClose[i]).filter((message) => message.op === 'event')
    const own = after.every((event) => event.data?.prefix === 'mid' && (event.seq as number) > 0)
    const seqs = client.messages.filter((message) => message.op === 'event').map((event) => event.seq as number)
    t.ok(own && seqs.every((seq, k) => seq === k + 1), `${client.name} (${client.kind.format}${client.kind.deflate ? ', deflate' : ''}): its frames up to its close are its own, seq +1 (${after.length} in the last burst)`)
  }
})
