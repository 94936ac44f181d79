import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { connect, type ConnectOptions, type EventHandler, type EventSocketClient, type ReceivedEvent, type ResumeResult } from '../lib/client/index.js'
import type { EventSocketClientError } from '../lib/client/errors.js'
import { waitFor, within } from './helpers/wait.js'

// The bundled client's resume (docs/protocol.md section 6) against a fake
// server: a plain `ws` server speaking the protocol by hand, so that each
// test decides exactly what the client is sent, and reads exactly what it
// sends back (the `since` of every `sub`, and their order).

type Message = Record<string, any>

const hello = { op: 'hello', v: 1, session: 's', user: 'u', window: 64, maxMessageBytes: 16384, heartbeatMs: 30000, expiresAt: null }

/** One connection on the fake server's side. */
class FakeConnection {
  readonly socket: WebSocket
  /** What the client sent, in order. */
  readonly received: Message[] = []
  #seq = 0

  constructor (socket: WebSocket) {
    this.socket = socket
    socket.on('message', (data: Buffer) => { this.received.push(JSON.parse(data.toString()) as Message) })
    this.send(hello)
  }

  send (message: Message): void {
    this.socket.send(JSON.stringify(message))
  }

  event (topic: string, pos: string): void {
    this.send({ op: 'event', seq: ++this.#seq, topic, id: `id-${pos}`, data: pos, pos })
  }

  ok (request: Message, extra: Message = {}): void {
    this.send({ op: 'ok', id: request.id, ...extra })
  }

  refuse (request: Message, code: string): void {
    this.send({ op: 'error', id: request.id, code, message: `refused: ${code}` })
  }

  /** The first `count` subs the client sent on this connection. */
  async subs (count: number, what: string): Promise<Message[]> {
    const subs = (): Message[] => this.received.filter((message) => message.op === 'sub')
    await waitFor(() => subs().length >= count, { what, timeoutMs: 5000, detail: () => JSON.stringify(this.received) })
    return subs().slice(0, count)
  }
}

class FakeServer {
  readonly wss: WebSocketServer
  readonly connections: FakeConnection[] = []

  constructor (wss: WebSocketServer) {
    this.wss = wss
    wss.on('connection', (socket) => { this.connections.push(new FakeConnection(socket)) })
  }

  get url (): string {
    return `ws://127.0.0.1:${(this.wss.address() as { port: number }).port}/events`
  }

  /** The `n`th connection (0-based), once the client opened it. */
  async connection (n: number): Promise<FakeConnection> {
    await waitFor(() => this.connections.length > n, { what: `connection ${n}`, timeoutMs: 5000 })
    return this.connections[n] as FakeConnection
  }
}

async function fakeServer (t: Test): Promise<FakeServer> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await new Promise((resolve) => wss.once('listening', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of wss.clients) socket.terminate()
    wss.close(() => resolve())
  }))
  return new FakeServer(wss)
}

interface Started {
  client: EventSocketClient
  /** Every 'resume' the client emitted, in order. */
  resumes: ResumeResult[]
  errors: EventSocketClientError[]
}

function start (t: Test, server: FakeServer, options: Partial<ConnectOptions> = {}): Started {
  const client = connect({ url: server.url, token: 'x', WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 100 }, ...options })
  t.teardown(() => client.close())
  const started: Started = { client, resumes: [], errors: [] }
  client.on('resume', (result) => { started.resumes.push(result) })
  client.on('error', (error) => { started.errors.push(error) })
  return started
}

/** A handler that records the pos of every event it is handed. */
function recorder (): { seen: string[], handler: (event: ReceivedEvent) => void } {
  const seen: string[] = []
  return { seen, handler: (event) => { seen.push(event.pos ?? '(none)') } }
}

function subOf (sub: Message): { topic: string, since?: string } {
  return sub.since === undefined ? { topic: sub.topic } : { topic: sub.topic, since: sub.since }
}

/** Subscribes `a.*` with `handler`, has the first connection accept it and send `a.x` at each of `positions`; returns once they are handled. */
async function heldThrough (server: FakeServer, client: EventSocketClient, handler: EventHandler, ...positions: string[]): Promise<FakeConnection> {
  const ready = client.subscribe('a.*', handler).ready
  const first = await server.connection(0)
  first.ok((await first.subs(1, 'the sub'))[0] as Message)
  await within(ready, { what: 'the ok' })
  for (const pos of positions) first.event('a.x', pos)
  await waitFor(() => client.position === positions.at(-1), { what: 'the events handled', timeoutMs: 5000 })
  return first
}

t.test('after a reconnect the held patterns are asked for first, in one burst, with since = the last dispatched pos; the others follow without since', async (t) => {
  const server = await fakeServer(t)
  // Each send tagged with the synchronous run it belongs to: a microtask ends the run.
  const sends: Array<{ turn: number, message: Message }> = []
  let turn = 0
  let ending = false
  class TurnWebSocket extends WebSocket {
    override send (data: string): void {
      sends.push({ turn, message: JSON.parse(data) as Message })
      if (!ending) {
        ending = true
        queueMicrotask(() => { turn++; ending = false })
      }
      super.send(data)
    }
  }
  // Slow backoff: the UNAVAILABLE re-send on the first connection comes after it is gone.
  const { client, resumes } = start(t, server, { WebSocket: TurnWebSocket, reconnect: { initialDelayMs: 300, maxDelayMs: 300 } })
  const a = recorder()
  client.subscribe('n.*', () => {})
  client.subscribe('a.*', a.handler)
  client.subscribe('b.*', a.handler)
  const first = await server.connection(0)
  const [n, subA, subB] = await first.subs(3, 'the first subs') as [Message, Message, Message]
  first.refuse(n, 'UNAVAILABLE') // never in effect: nothing to resume
  first.ok(subA)
  first.ok(subB)
  first.event('a.x', 'p1')
  first.event('b.x', 'p2')
  await waitFor(() => a.seen.length === 2, { what: 'both events handled', timeoutMs: 5000 })
  t.equal(client.position, 'p2', 'the position is the last dispatched event\'s')

  let c: Promise<void> | undefined
  client.on('disconnect', () => { c ??= client.subscribe('c.*', () => {}).ready })
  first.socket.close(1001)
  const second = await server.connection(1)
  const subs = await second.subs(4, 'the resubscription')
  t.same(subs.map(subOf), [
    { topic: 'a.*', since: 'p2' },
    { topic: 'b.*', since: 'p2' },
    { topic: 'n.*' },
    { topic: 'c.*' }
  ], 'the resuming subs first, with the position; the one never in effect and the one subscribed while disconnected after, without since')
  const turns = new Set(sends.filter(({ message }) => subs.some((sub) => sub.id === message.id)).map((send) => send.turn))
  t.equal(turns.size, 1, 'sent in one synchronous run')

  second.ok(subs[0] as Message, { recovered: true })
  second.ok(subs[1] as Message, { recovered: false })
  second.ok(subs[2] as Message)
  second.ok(subs[3] as Message)
  // c.*'s ok is the last answer: once it is in, every resume event would be too.
  await within(c as Promise<void>, { what: 'the ok of c.*' })
  t.same(resumes, [{ pattern: 'a.*', recovered: true }, { pattern: 'b.*', recovered: false }], 'one resume event per resuming sub, none for the others')
})

t.test('a sub unanswered when the connection drops resumes too: the server may have held it', async (t) => {
  const server = await fakeServer(t)
  const { client } = start(t, server)
  const first = await heldThrough(server, client, () => {}, 'p1')
  client.subscribe('b.*', () => {})
  await first.subs(2, 'the sub of b.*')
  first.socket.close(1001)

  const second = await server.connection(1)
  t.same((await second.subs(2, 'the resubscription')).map(subOf), [{ topic: 'a.*', since: 'p1' }, { topic: 'b.*', since: 'p1' }])
})

t.test('an ok\'s pos is the resume point only until the first event', async (t) => {
  const server = await fakeServer(t)
  const { client } = start(t, server)
  const a = recorder()
  await Promise.all([
    client.subscribe('a.*', a.handler).ready,
    server.connection(0).then(async (first) => first.ok((await first.subs(1, 'the sub'))[0] as Message, { pos: 'o1' }))
  ])
  t.equal(client.position, 'o1', 'before any event, the ok\'s pos')
  ;(await server.connection(0)).socket.close(1001)

  const second = await server.connection(1)
  const [resub] = await second.subs(1, 'the resuming sub') as [Message]
  t.same(subOf(resub), { topic: 'a.*', since: 'o1' }, 'resumes from the ok\'s pos')
  second.ok(resub, { recovered: true })
  second.event('a.x', 'e1')
  await waitFor(() => a.seen.length === 1, { what: 'the event', timeoutMs: 5000 })
  t.equal(client.position, 'e1')
  const b = client.subscribe('b.*', () => {}).ready
  second.ok((await second.subs(2, 'the sub of b.*'))[1] as Message, { pos: 'o2' })
  await within(b, { what: 'the ok of b.*' })
  t.equal(client.position, 'e1', 'an ok\'s pos after an event does not replace it')
  second.socket.close(1001)

  const third = await server.connection(2)
  t.same((await third.subs(2, 'the second resubscription')).map(subOf), [{ topic: 'a.*', since: 'e1' }, { topic: 'b.*', since: 'e1' }])
})

for (const [code, reason] of [[1001, 'going away'], [1013, 'resume again'], [4008, 'slow consumer; resume after p1']] as const) {
  t.test(`a close with ${code} is followed by a reconnect that resumes`, async (t) => {
    const server = await fakeServer(t)
    const { client, resumes } = start(t, server)
    const a = recorder()
    const first = await heldThrough(server, client, a.handler, 'p1', 'p2')
    first.socket.close(code, reason)

    const second = await server.connection(1)
    const [resub] = await second.subs(1, 'the resuming sub') as [Message]
    t.same(subOf(resub), { topic: 'a.*', since: 'p2' })
    second.ok(resub, { recovered: true })
    second.event('a.x', 'p3')
    await waitFor(() => a.seen.length === 3, { what: 'the event after the resume', timeoutMs: 5000 })
    t.same(a.seen, ['p1', 'p2', 'p3'])
    t.same(resumes, [{ pattern: 'a.*', recovered: true }])
    t.equal(client.state, 'open')
  })
}

t.test('an async handler still running at the disconnect is not called again for its event', async (t) => {
  const server = await fakeServer(t)
  const { client } = start(t, server)
  // A faithful fake: it replays what the log holds after `since`.
  const log = ['p1', 'p2']
  const calls: string[] = []
  let release: () => void = () => {}
  const blocked = new Promise<void>((resolve) => { release = resolve })
  t.teardown(() => { release() })
  client.subscribe('a.*', async (event) => {
    calls.push(event.pos as string)
    await blocked
  })
  const first = await server.connection(0)
  first.ok((await first.subs(1, 'the sub'))[0] as Message)
  first.event('a.x', 'p1')
  await waitFor(() => calls.length === 1, { what: 'the handler to start', timeoutMs: 5000 })
  first.socket.close(1001)

  const second = await server.connection(1)
  const [resub] = await second.subs(1, 'the resuming sub') as [Message]
  t.equal(resub.since, 'p1', 'the event being handled counts as processed')
  second.ok(resub, { recovered: true })
  for (const pos of log.slice(log.indexOf(resub.since as string) + 1)) second.event('a.x', pos)
  await waitFor(() => calls.length === 2, { what: 'the replayed event', timeoutMs: 5000 })
  t.same(calls, ['p1', 'p2'], 'each event handed to the handler once')
  t.notOk(first.received.some((message) => message.op === 'ack'), 'p1 was never acknowledged: the since, not the ack, covers it')
})

t.test('a BAD_REQUEST to since: the sub is sent again without since, resume reports recovered false, and the position is forgotten', async (t) => {
  const server = await fakeServer(t)
  const { client, resumes, errors } = start(t, server)
  const a = recorder()
  const first = await heldThrough(server, client, a.handler, 'p1')
  first.socket.close(1001)

  const second = await server.connection(1)
  const [resub] = await second.subs(1, 'the resuming sub') as [Message]
  t.equal(resub.since, 'p1')
  const resumed = new Promise<ResumeResult>((resolve) => { client.on('resume', resolve) })
  second.refuse(resub, 'BAD_REQUEST')
  const [again] = (await second.subs(2, 'the sub sent again')).slice(1) as [Message]
  t.same(subOf(again), { topic: 'a.*' }, 'without since')
  t.equal(client.position, undefined, 'the position the server never issued is forgotten')
  second.ok(again, { pos: 'q1' })
  t.same(await within(resumed, { what: 'the resume event' }), { pattern: 'a.*', recovered: false })
  t.same(resumes, [{ pattern: 'a.*', recovered: false }], 'reported once')
  t.same(errors, [], 'the BAD_REQUEST is no error of the app\'s')
  t.equal(client.position, 'q1', 'the new history\'s position, from the ok')
  second.event('a.x', 'q2')
  await waitFor(() => a.seen.length === 2, { what: 'the event after the reset', timeoutMs: 5000 })
  t.same(a.seen, ['p1', 'q2'], 'the pattern stays held')
})

t.test('the since option: patterns subscribed before the first open resume from it, later ones start live', async (t) => {
  const server = await fakeServer(t)
  t.throws(() => connect({ url: server.url, WebSocket, since: 42 as unknown as string }), TypeError)
  const { client, resumes } = start(t, server, { since: 'stored' })
  t.equal(client.position, 'stored', 'position reads the option before anything arrived')
  const a = client.subscribe('a.*', () => {}).ready
  const first = await server.connection(0)
  const [subA] = await first.subs(1, 'the first sub') as [Message]
  t.same(subOf(subA), { topic: 'a.*', since: 'stored' })
  first.ok(subA, { recovered: true })
  await within(a, { what: 'the ok of a.*' })
  t.same(resumes, [{ pattern: 'a.*', recovered: true }], 'the app learns whether its stored position was still retained')
  const b = client.subscribe('b.*', () => {}).ready
  const [, subB] = await first.subs(2, 'the later sub') as [Message, Message]
  t.same(subOf(subB), { topic: 'b.*' }, 'subscribed after the open: live, no since')
  first.ok(subB)
  await within(b, { what: 'the ok of b.*' })
  t.equal(resumes.length, 1, 'no resume event for a fresh pattern')
})

t.test('an UNAVAILABLE resuming sub is sent again with the same since', async (t) => {
  const server = await fakeServer(t)
  const { client, resumes } = start(t, server)
  const first = await heldThrough(server, client, () => {}, 'p1')
  first.socket.close(1001)

  const second = await server.connection(1)
  second.refuse((await second.subs(1, 'the resuming sub'))[0] as Message, 'UNAVAILABLE')
  const [, again] = await second.subs(2, 'the re-send') as [Message, Message]
  t.same(subOf(again), { topic: 'a.*', since: 'p1' })
  second.ok(again, { recovered: true })
  await waitFor(() => resumes.length === 1, { what: 'the resume event', timeoutMs: 5000 })
  t.same(resumes, [{ pattern: 'a.*', recovered: true }])
})

t.test('ok fields of the wrong type are ignored', async (t) => {
  const server = await fakeServer(t)
  const { client, resumes } = start(t, server, { since: 'stored' })
  const ready = client.subscribe('a.*', () => {}).ready
  const first = await server.connection(0)
  first.ok((await first.subs(1, 'the sub'))[0] as Message, { recovered: 'yes', pos: 7 })
  await within(ready, { what: 'the ok' })
  t.same(resumes, [{ pattern: 'a.*', recovered: false }], 'recovered only when it is true')
  t.equal(client.position, 'stored', 'a pos that is no string is not taken')
})
