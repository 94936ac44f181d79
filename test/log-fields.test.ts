import t, { type Test } from 'tap'
import { brokerOptions, privateVhost, rabbitmqctl, requireBroker, type LogEntry } from './helpers/broker.js'
import { attemptHandshake, startServer, TestClient, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'
import type { EventSocketOptions } from '../lib/index.js'

// What an operator reads (docs/architecture.md, "Logs"): every line about a
// connection names it (the upgrade request's reqId), its session and its
// user; a client's own mistakes never log at error; the broker's state
// changes are logged once each; no token ever.

const ERROR = 50
const WARN = 40
const INFO = 30

interface LoggedServer extends TestServer { entries: LogEntry[] }

async function loggedServer (t: Test, options: EventSocketOptions): Promise<LoggedServer> {
  const entries: LogEntry[] = []
  const stream = { write: (line: string) => { entries.push(JSON.parse(line) as LogEntry) } }
  const server = await startServer(t, { expiryNoticeMs: 0, ...options }, undefined, { level: 'debug', stream })
  return { ...server, entries }
}

/** The reqId Fastify gave the upgrade that opened `session`, from the plugin's 'opened' line. */
function connectionId (entries: LogEntry[], session: string): unknown {
  return entries.find((entry) => entry.msg === 'event socket opened' && entry.session === session)?.reqId
}

async function hello (client: TestClient): Promise<string> {
  return (await client.next((message) => message.op === 'hello')).session as string
}

t.test('a scripted session logs every connection line with its connection, session and user; nothing at error; no token', async (t) => {
  const server = await loggedServer(t, { maxBadFrames: 3 })
  const token = server.sign({ sub: 'u1' })
  const refreshed = server.sign({ sub: 'u1' }, { expiresIn: '2h' })
  const forged = `${token.slice(0, -6)}AAAAAA`

  // A handshake refused for its token, one admitted.
  t.equal((await attemptHandshake(server.url, { headers: { authorization: `Bearer ${forged}` } })).status, 401)
  const client = new TestClient(server.url, { token })
  const session = await hello(client)

  client.ws.send('not json')
  await client.next((message) => message.op === 'error' && message.code === 'BAD_REQUEST')
  client.send({ op: 'auth', id: 1, token: refreshed })
  await client.next((message) => message.op === 'ok' && message.id === 1)
  client.send({ op: 'auth', id: 2, token: forged })
  await client.next((message) => message.op === 'error' && message.id === 2)
  client.ws.close(1000, 'bye')
  await client.closed
  await waitFor(() => server.entries.some((entry) => entry.msg === 'event socket closed' && entry.session === session), { what: 'the close logged' })

  // A second connection floods bad frames until it is cut with 4002.
  const flooder = new TestClient(server.url, { token: server.sign({ sub: 'u2' }) })
  const flooderSession = await hello(flooder)
  for (let i = 0; i < 3; i++) flooder.ws.send('{')
  t.equal((await flooder.closed).code, 4002)
  await waitFor(() => server.entries.some((entry) => entry.msg === 'event socket closed' && entry.session === flooderSession), { what: 'the 4002 logged' })

  const reqId = connectionId(server.entries, session)
  t.ok(typeof reqId === 'string' && reqId.length > 0, 'the opened line carries the connection id (reqId)')
  const ofSession = server.entries.filter((entry) => entry.session === session)
  t.same(ofSession.map((entry) => entry.msg), [
    'event socket opened',
    'event socket refused a request',
    'event socket token refreshed',
    'event socket refused a request',
    'event socket closed'
  ], 'each step of the session is logged')
  for (const entry of ofSession) t.match(entry, { reqId, session, user: 'u1' }, `${entry.msg}: connection, session and user`)
  t.match(ofSession[1], { level: 20, code: 'BAD_REQUEST' }, 'a bad frame at debug')
  t.match(ofSession[3], { level: 20, code: 'BAD_TOKEN' }, 'a bad token at debug')
  t.match(ofSession[4], { level: 20, code: 1000, reason: 'bye', byServer: false }, 'the client\'s close at debug')

  const flood = server.entries.filter((entry) => entry.session === flooderSession)
  for (const entry of flood) t.match(entry, { reqId: connectionId(server.entries, flooderSession), user: 'u2' }, `${entry.msg}: connection and user`)
  t.match(flood.at(-1), { msg: 'event socket closed', level: INFO, code: 4002, byServer: true }, 'the cut for bad frames at info')

  // Every plugin line about a connection is one of these, so all carry the ids.
  const aboutConnections = server.entries.filter((entry) => entry.session !== undefined)
  t.ok(aboutConnections.every((entry) => entry.reqId !== undefined && entry.user !== undefined), 'no connection line without its connection id and user')
  t.same(server.entries.filter((entry) => entry.level >= ERROR).map((entry) => entry.msg), [], 'nothing at error for a client\'s mistakes')
  const log = JSON.stringify(server.entries)
  for (const secret of [token, refreshed, forged]) t.notOk(log.includes(secret.split('.').at(-1) as string), 'no token signature in the log')
})

t.test('at info, a connection makes no logger of its own for debug lines; its info line still names its session and user', async (t) => {
  const entries: LogEntry[] = []
  const stream = { write: (line: string) => { entries.push(JSON.parse(line) as LogEntry) } }
  // The bindings of every child made of an upgrade request's logger: the connection's carries its session.
  const children: Array<Record<string, unknown>> = []
  const server = await startServer(t, { maxBadFrames: 2 }, (app) => {
    app.addHook('onRequest', async (request) => {
      const child = request.log.child.bind(request.log)
      request.log.child = (bindings, options) => {
        children.push(bindings)
        return child(bindings, options)
      }
    })
  }, { level: 'info', stream })
  const client = new TestClient(server.url, { token: server.sign({ sub: 'quiet' }) })
  const session = await hello(client)
  // Refused at debug: not written at info.
  client.ws.send('not json')
  await client.next((message) => message.op === 'error' && message.code === 'BAD_REQUEST')
  t.same(children.filter((bindings) => 'session' in bindings), [], 'opened and refused (debug lines) without a child logger')

  // The second bad frame closes it with 4002, logged at info with its ids.
  client.ws.send('not json')
  t.equal((await client.closed).code, 4002)
  await waitFor(() => entries.some((entry) => entry.msg === 'event socket closed'), { what: 'the 4002 logged' })
  const closed = entries.find((entry) => entry.msg === 'event socket closed')
  t.equal(closed?.session, session, 'the info line names the session')
  t.equal(closed?.user, 'quiet', 'and the user')
  t.equal(children.filter((bindings) => 'session' in bindings).length, 1, 'the child was made for that line')
})

t.test('a broker connection cut and its recovery are logged once each, at warn then info', async (t) => {
  if (!await requireBroker(t)) return
  const url = await privateVhost(t)
  // Slow enough reconnects that both connections are down before either comes back: one loss, one recovery.
  const server = await loggedServer(t, { broker: brokerOptions(t, { url, reconnectInitialDelayMs: 300 }) })
  const client = new TestClient(server.url, { token: server.sign({ sub: 'u1' }) })
  await hello(client)
  t.teardown(() => client.close())

  const vhost = decodeURIComponent(new URL(url).pathname.slice(1))
  await rabbitmqctl('close_all_connections', '-p', vhost, 'evsock log test')
  await waitFor(() => server.entries.some((entry) => entry.msg.includes('recovered')), { what: 'the recovery logged', timeoutMs: 20_000 })
  // A publish round trip: the bus is fully back, and anything logged about the cut is in.
  client.send({ op: 'sub', id: 1, topic: 'user.u1.#' })
  await client.next((message) => message.op === 'ok' && message.id === 1, { timeout: 10_000 })
  await server.app.publish('user.u1.after', {})
  await client.next((message) => message.op === 'event' && message.topic === 'user.u1.after', { timeout: 10_000 })

  const states = server.entries.filter((entry) => /broker connection (up|lost)/.test(entry.msg))
  t.same(states.map((entry) => [entry.level, entry.msg]), [
    [INFO, 'event socket: broker connection up'],
    [WARN, 'event socket: broker connection lost; reconnecting'],
    [INFO, 'event socket: broker connection up again (recovered)']
  ], 'start, loss and recovery, once each')
  t.same(server.entries.filter((entry) => entry.level >= WARN && !states.includes(entry)).map((entry) => entry.msg), [], 'nothing else at warn or above')
})
