import t, { type Test as Tap } from 'tap'
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import eventSocket, { type EventSocketOptions } from '../lib/index.js'
import { attemptHandshake, SECRET, TestClient, type TestServer } from './helpers/server.js'
import { rawWebSocket } from './helpers/raw-socket.js'

// A token in a log is a credential anyone with log access can replay.
// The server here logs everything at trace level into a buffer; each token
// handed over in any way docs/protocol.md allows must never appear in it.

interface LoggedServer extends TestServer {
  /** Everything logged so far. */
  log (): string
}

async function loggedServer (t: Tap, options: EventSocketOptions, setup?: (app: FastifyInstance) => void, init: { fastify?: FastifyServerOptions, prefix?: string } = {}): Promise<LoggedServer> {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString())
      done()
    }
  })
  const app = Fastify({ ...init.fastify, logger: { level: 'trace', stream } })
  const plugin = { jwt: { secret: SECRET }, expiryNoticeMs: 0, ...options }
  // Under a prefix @fastify/jwt is registered in the prefixed scope.
  let signer: FastifyInstance = app
  if (init.prefix === undefined) await app.register(eventSocket, plugin)
  else {
    await app.register(async (scope) => {
      await scope.register(eventSocket, plugin)
      signer = scope
    }, { prefix: init.prefix })
  }
  setup?.(app)
  const origin = new URL(await app.listen({ port: 0, host: '127.0.0.1' }))
  t.teardown(() => app.close())
  const sign: TestServer['sign'] = (claims, signOptions) => signer.jwt.sign(claims, { expiresIn: '1h', ...signOptions })
  return { app, port: Number(origin.port), url: `ws://${origin.host}/events`, sign, log: () => lines.join('') }
}

/** Every way a token can reach the server, good or bad; returns the tokens used. */
async function handshakes (server: LoggedServer, query: boolean): Promise<string[]> {
  const good = server.sign({ sub: 'u1', role: 'admin' })
  const expired = server.sign({ sub: 'u1', exp: Math.floor(Date.now() / 1000) - 60 }, { expiresIn: undefined })
  const notYet = server.sign({ sub: 'u1' }, { notBefore: '1h' })
  const forged = `${good.slice(0, -6)}AAAAAA`
  const garbage = 'not-a-jwt-but-a-secret-looking-string-0123456789'
  const tokens = [good, expired, notYet, forged, garbage]
  for (const token of tokens) {
    await attemptHandshake(server.url, { headers: { authorization: `Bearer ${token}` } })
    await attemptHandshake(server.url, { protocols: ['evsock.v1.json', `bearer.${token}`] })
    await attemptHandshake(server.url, { protocols: [`bearer.${token}`] })
    await attemptHandshake(server.url, { protocols: ['chat.v2', `bearer.${token}`] })
    if (query) {
      await attemptHandshake(`${server.url}?access_token=${token}`)
      await attemptHandshake(`${server.url}?x=1&access_token=${encodeURIComponent(token)}&y=2`)
    }
  }
  // Refreshes: a good one, a bad one, one for another user.
  const client = new TestClient(server.url, { token: good })
  await client.next((m) => m.op === 'hello')
  const refreshed = server.sign({ sub: 'u1', role: 'admin' }, { expiresIn: '2h' })
  const otherUser = server.sign({ sub: 'u2' })
  client.send({ op: 'auth', id: 1, token: refreshed })
  client.send({ op: 'auth', id: 2, token: forged })
  client.send({ op: 'auth', id: 3, token: otherUser })
  client.send({ op: 'auth', id: 4, token: expired })
  await client.next(() => client.messages.filter((m) => m.id !== undefined).length === 4)
  client.close()
  await client.closed
  return [...tokens, refreshed, otherUser]
}

function assertNotLogged (t: Tap, log: string, tokens: string[]): void {
  t.ok(log.includes('incoming request'), 'requests were logged')
  for (const token of tokens) {
    // The signature alone is the secret part; check it and the whole token, raw and URL-encoded.
    const signature = token.split('.').at(-1)!
    for (const needle of [token, encodeURIComponent(token), signature]) {
      t.notOk(needle.length > 8 && log.includes(needle), `not logged: ${needle.slice(0, 16)}…`)
    }
  }
}

t.test('with the defaults no token reaches the log, whatever the carrier or outcome', async (t) => {
  const server = await loggedServer(t, {})
  const tokens = await handshakes(server, true)
  assertNotLogged(t, server.log(), tokens)
})

t.test('with allowQueryToken the query token is taken out of the URL before Fastify logs the request', async (t) => {
  const server = await loggedServer(t, { allowQueryToken: true })
  const token = server.sign({ sub: 'u1' })
  const admitted = await attemptHandshake(`${server.url}?x=1&access_token=${token}&y=2`)
  t.equal(admitted.status, 101, 'the query token is still accepted')
  t.match(server.log(), /"url":"\/events\?x=1&y=2"/, 'the other query parameters stay in the logged URL')
  const tokens = await handshakes(server, true)
  assertNotLogged(t, server.log(), [token, ...tokens])
})

t.test('a plain GET with a query token gets 426 and leaves no token in the log either', async (t) => {
  const server = await loggedServer(t, { allowQueryToken: true })
  const token = server.sign({ sub: 'u1' })
  const response = await fetch(`http://127.0.0.1:${server.port}/events?access_token=${token}`)
  t.equal(response.status, 426)
  assertNotLogged(t, server.log(), [token])
})

t.test('an encoded parameter name, a trailing slash and upper case are stripped too; other routes keep their query', async (t) => {
  const server = await loggedServer(t, { allowQueryToken: true }, (app) => {
    app.get('/other', async (request) => request.query)
  })
  const token = server.sign({ sub: 'u1' })
  t.equal((await attemptHandshake(`${server.url}?access%5Ftoken=${token}`)).status, 101, 'an encoded name still carries the token')
  t.equal((await attemptHandshake(`${server.url}/?access_token=${token}`)).status, 404, 'a trailing slash is another route by default')
  t.equal((await attemptHandshake(server.url.replace('/events', '/EVENTS') + `?access_token=${token}`)).status, 404)
  assertNotLogged(t, server.log(), [token])
  const other = await fetch(`http://127.0.0.1:${server.port}/other?access_token=abc&b=2`)
  t.same(await other.json(), { access_token: 'abc', b: '2' }, 'the app\'s own routes are untouched')
})

let signed = 0

/** Opens a socket with the token in the query only, so that a 101 proves the request reached the route with it. */
async function admittedByQuery (t: Tap, server: LoggedServer, target: (token: string) => string): Promise<string> {
  const token = server.sign({ sub: 'u1', n: ++signed })
  try {
    const socket = await rawWebSocket(server.port, target(token), {})
    t.teardown(() => socket.destroy())
    t.pass(`admitted: ${target('T')}`)
  } catch (err) {
    t.fail(`${target('T')}: ${(err as Error).message}`)
  }
  return token
}

t.test('every spelling of the path that reaches the route has its query token stripped before it is logged', async (t) => {
  const server = await loggedServer(t, { allowQueryToken: true, handshakesPerMinute: 0 })
  const host = `127.0.0.1:${server.port}`
  const tokens = [
    // The router decodes percent-encoding in the path before matching.
    await admittedByQuery(t, server, (token) => `/%65vents?access_token=${token}`),
    await admittedByQuery(t, server, (token) => `/%65v%65nts?x=1&access_token=${token}`),
    // It ends the path at `#` too, and reads the query from there.
    await admittedByQuery(t, server, (token) => `/events#access_token=${token}`),
    await admittedByQuery(t, server, (token) => `/events#x?access_token=${token}`),
    // An absolute-form request target routes by its path.
    await admittedByQuery(t, server, (token) => `http://${host}/%65vents?access_token=${token}`)
  ]
  assertNotLogged(t, server.log(), tokens)
})

t.test('with the router\'s lenient options, and under a prefix, the spellings they admit are stripped too', async (t) => {
  const server = await loggedServer(t, { allowQueryToken: true, handshakesPerMinute: 0 }, undefined, {
    fastify: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, caseSensitive: false, useSemicolonDelimiter: true },
    prefix: '/api'
  })
  const tokens = [
    await admittedByQuery(t, server, (token) => `/api/%65vents?access_token=${token}`),
    await admittedByQuery(t, server, (token) => `/api/events/?access_token=${token}`),
    await admittedByQuery(t, server, (token) => `//api//events?access_token=${token}`),
    await admittedByQuery(t, server, (token) => `/API/%45VENTS?access_token=${token}`),
    await admittedByQuery(t, server, (token) => `/api/events;access_token=${token}`),
    await admittedByQuery(t, server, (token) => `/api/e%76ents;x=1?access_token=${token}`)
  ]
  assertNotLogged(t, server.log(), tokens)
})
