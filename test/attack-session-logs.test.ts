import t, { type Test } from 'tap'
import Fastify, { type FastifyBaseLogger } from 'fastify'
import WebSocket from 'ws'
import eventSocket, { type EventSocketOptions } from '../lib/index.js'
import type { LogEntry } from './helpers/broker.js'
import { SECRET, startServer, TestClient, type TestServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// Red-team attack on commit dc99de0 (lib/connection.ts): debug lines go
// through Connection.debug, which asks the logger's isLevelEnabled before it
// makes the connection's child logger. At level 'debug' every connection line
// must still carry reqId, session and user, whichever line comes first
// (debug or not); a custom logger without isLevelEnabled must be given every
// line, and nothing may throw.

const DEBUG = 20

async function hello (client: TestClient): Promise<string> {
  return (await client.next((message) => message.op === 'hello')).session as string
}

async function closedOf (client: TestClient): Promise<{ code: number, reason: string }> {
  return await within(client.closed, { what: 'the socket to close', timeoutMs: 5000 })
}

interface Logged { entries: LogEntry[], server: TestServer }

async function debugServer (t: Test, options: EventSocketOptions = {}): Promise<Logged> {
  const entries: LogEntry[] = []
  const stream = { write: (line: string) => { entries.push(JSON.parse(line) as LogEntry) } }
  const server = await startServer(t, { expiryNoticeMs: 0, ...options }, undefined, { level: 'debug', stream })
  return { entries, server }
}

/** The connection lines of `session`, each checked for its reqId (the same for all), session and user. */
function checkLines (t: Test, entries: LogEntry[], session: string, user: string, wanted: string[]): void {
  const lines = entries.filter((entry) => entry.session === session)
  t.same(lines.map((entry) => entry.msg), wanted, `${user}: the lines of the session, in order`)
  const reqId = lines[0]?.reqId
  t.ok(typeof reqId === 'string' && reqId.length > 0, `${user}: a reqId`)
  for (const entry of lines) t.match(entry, { reqId, session, user }, `${user}: "${String(entry.msg)}" carries reqId, session and user`)
  // A connection line that lost its child logger would lack the session: find the plugin's lines by message instead.
  const byMessage = entries.filter((entry) => typeof entry.msg === 'string' && entry.msg.startsWith('event socket') && entry.reqId === reqId)
  t.ok(byMessage.every((entry) => entry.session === session && entry.user === user), `${user}: no line of its connection without the session and user`)
}

t.test('at debug, every line of a connection carries reqId, session and user: opened, refused, refreshed, closed', async (t) => {
  const { entries, server } = await debugServer(t, { maxBadFrames: 5 })
  const client = new TestClient(server.url, { token: server.sign({ sub: 'dbg' }) })
  t.teardown(() => client.ws.terminate())
  const session = await hello(client)
  client.ws.send('not json')
  await client.next((message) => message.op === 'error' && message.code === 'BAD_REQUEST')
  client.send({ op: 'auth', id: 1, token: server.sign({ sub: 'dbg' }, { expiresIn: '2h' }) })
  await client.next((message) => message.op === 'ok' && message.id === 1)
  client.ws.close(1000, 'bye')
  await closedOf(client)
  await waitFor(() => entries.some((entry) => entry.msg === 'event socket closed' && entry.session === session), { what: 'the close logged' })
  checkLines(t, entries, session, 'dbg', ['event socket opened', 'event socket refused a request', 'event socket token refreshed', 'event socket closed'])
  t.ok(entries.filter((entry) => entry.session === session).every((entry) => entry.level === DEBUG), 'all at debug')
})

t.test('at debug, a peer that misses a heartbeat: the missed-heartbeat and close lines carry reqId, session and user', async (t) => {
  const { entries, server } = await debugServer(t, { heartbeatMs: 100 })
  // A client that never answers pings.
  const ws = new WebSocket(server.url, [], { headers: { authorization: `Bearer ${server.sign({ sub: 'deaf' })}` }, autoPong: false })
  t.teardown(() => ws.terminate())
  let session: string | undefined
  ws.on('message', (data: Buffer) => { session ??= JSON.parse(data.toString()).session })
  ws.on('error', () => {})
  await waitFor(() => session !== undefined, { what: 'the hello' })
  await waitFor(() => entries.some((entry) => entry.msg === 'event socket closed' && entry.session === session), { what: 'the deaf peer to be dropped and logged', timeoutMs: 5000 })
  checkLines(t, entries, session!, 'deaf', ['event socket opened', 'event socket missed a heartbeat', 'event socket closed'])
})

t.test('at debug, many connections of several users at once: each line carries its own connection\'s ids', async (t) => {
  const { entries, server } = await debugServer(t, { maxBadFrames: 1, handshakesPerMinute: 10_000 })
  const clients = Array.from({ length: 12 }, (_, i) => new TestClient(server.url, { token: server.sign({ sub: `user-${i % 4}` }) }))
  t.teardown(() => { for (const client of clients) client.ws.terminate() })
  const sessions = await Promise.all(clients.map(hello))
  // Even ones close themselves, odd ones are cut for a bad frame (4002, at info).
  for (const [i, client] of clients.entries()) {
    if (i % 2 === 0) client.ws.close(1000)
    else client.ws.send('{')
  }
  const codes = await Promise.all(clients.map(async (client) => (await closedOf(client)).code))
  t.same(codes, clients.map((_, i) => i % 2 === 0 ? 1000 : 4002))
  await waitFor(() => sessions.every((session) => entries.some((entry) => entry.msg === 'event socket closed' && entry.session === session)), { what: 'every close logged' })
  for (const [i, session] of sessions.entries()) {
    checkLines(t, entries, session, `user-${i % 4}`, i % 2 === 0
      ? ['event socket opened', 'event socket closed']
      : ['event socket opened', 'event socket refused a request', 'event socket closed'])
  }
})

// A logger that is not pino: the methods Fastify requires, no isLevelEnabled, every line recorded with its bindings.
interface Line { level: string, bindings: Record<string, unknown>, fields: Record<string, unknown>, msg: string }

function plainLogger (lines: Line[], bindings: Record<string, unknown> = {}): FastifyBaseLogger {
  const at = (level: string) => (first: unknown, second?: unknown): void => {
    const [fields, msg] = typeof first === 'string' ? [{}, first] : [first as Record<string, unknown>, String(second)]
    lines.push({ level, bindings, fields, msg })
  }
  return {
    level: 'debug',
    fatal: at('fatal'),
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    trace: at('trace'),
    silent: () => {},
    child: (more: Record<string, unknown>) => plainLogger(lines, { ...bindings, ...more })
  } as unknown as FastifyBaseLogger
}

t.test('a custom logger without isLevelEnabled: nothing throws, and it is given every debug line with session and user', async (t) => {
  const lines: Line[] = []
  const app = Fastify({ loggerInstance: plainLogger(lines) })
  await app.register(eventSocket, { jwt: { secret: SECRET }, maxBadFrames: 2, expiryNoticeMs: 0 })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  const url = `ws://127.0.0.1:${address.port}/events`
  const sign = (sub: string): string => app.jwt.sign({ sub, role: 'admin' }, { expiresIn: '1h' })

  const quiet = new TestClient(url, { token: sign('plain') })
  t.teardown(() => quiet.ws.terminate())
  const session = await hello(quiet)
  quiet.ws.send('not json')
  await quiet.next((message) => message.op === 'error' && message.code === 'BAD_REQUEST')
  quiet.send({ op: 'auth', id: 1, token: sign('plain') })
  await quiet.next((message) => message.op === 'ok' && message.id === 1)
  t.equal((await quiet.subscribe('plain.topic')).op, 'ok', 'requests still answered')
  quiet.ws.close(1000)
  await closedOf(quiet)

  const cut = new TestClient(url, { token: sign('cut') })
  t.teardown(() => cut.ws.terminate())
  const cutSession = await hello(cut)
  cut.ws.send('{')
  cut.ws.send('{')
  t.equal((await closedOf(cut)).code, 4002, 'the 4002 close still happens')
  await waitFor(() => lines.filter((line) => line.msg === 'event socket closed').length === 2, { what: 'both closes logged' })

  const of = (s: string): Line[] => lines.filter((line) => line.bindings.session === s)
  t.same(of(session).map((line) => `${line.level} ${line.msg}`), [
    'debug event socket opened', 'debug event socket refused a request', 'debug event socket token refreshed', 'debug event socket closed'
  ], 'every debug line of the session was given to the logger')
  t.ok(of(session).every((line) => line.bindings.user === 'plain' && line.bindings.reqId !== undefined), 'each with the user and the request id')
  t.same(of(cutSession).map((line) => `${line.level} ${line.msg}`).at(-1), 'info event socket closed', 'the 4002 close at info')
  t.same(lines.filter((line) => line.level === 'error').map((line) => line.msg), [], 'nothing logged at error (nothing threw)')
})
