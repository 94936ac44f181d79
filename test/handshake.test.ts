import t from 'tap'
import { attemptHandshake, openClient, startServer, TestClient } from './helpers/server.js'

t.test('a valid token in the Authorization header opens the socket and gets hello', async (t) => {
  const server = await startServer(t)
  const token = server.sign({ sub: 'alice', role: 'user' })
  const client = new TestClient(server.url, { token })
  t.teardown(() => client.ws.terminate())
  const hello = await client.next((m) => m.op === 'hello')
  t.equal(hello.v, 1)
  t.equal(hello.user, 'alice')
  t.equal(hello.window, 64)
  t.type(hello.session, 'string')
  t.equal(typeof hello.expiresAt, 'number')
  t.equal(hello.maxMessageBytes, 16384)
  t.equal(hello.heartbeatMs, 30000)
})

t.test('the bearer subprotocol carries the token and is never echoed back', async (t) => {
  const server = await startServer(t)
  const token = server.sign({ sub: 'alice' })
  const client = new TestClient(server.url, { protocols: ['evsock.v1.json', `bearer.${token}`] })
  t.teardown(() => client.ws.terminate())
  await client.opened
  t.equal(client.ws.protocol, 'evsock.v1.json')
  const hello = await client.next((m) => m.op === 'hello')
  t.equal(hello.user, 'alice')
})

t.test('the bearer subprotocol wins over the Authorization header', async (t) => {
  const server = await startServer(t)
  const client = new TestClient(server.url, {
    protocols: [`bearer.${server.sign({ sub: 'from-protocol' })}`, 'evsock.v1.json'],
    headers: { authorization: `Bearer ${server.sign({ sub: 'from-header' })}` }
  })
  t.teardown(() => client.ws.terminate())
  const hello = await client.next((m) => m.op === 'hello')
  t.equal(hello.user, 'from-protocol')
  t.equal(client.ws.protocol, 'evsock.v1.json')
})

t.test('refusals are HTTP responses with the status and code of docs/protocol.md, never an upgrade', async (t) => {
  const server = await startServer(t, { origins: ['https://app.example'], allowQueryToken: false })
  const valid = server.sign({ sub: 'u1' })
  const cases: Array<[string, Parameters<typeof attemptHandshake>[1], number, string]> = [
    ['no token', {}, 401, 'FST_EVSOCK_NO_TOKEN'],
    ['bad signature', { headers: { authorization: `Bearer ${valid.slice(0, -3)}abc` } }, 401, 'FST_EVSOCK_BAD_TOKEN'],
    ['malformed', { headers: { authorization: 'Bearer not.a.jwt' } }, 401, 'FST_EVSOCK_BAD_TOKEN'],
    ['alg none', { headers: { authorization: `Bearer ${unsigned({ sub: 'u1' })}` } }, 401, 'FST_EVSOCK_BAD_TOKEN'],
    ['expired', { headers: { authorization: `Bearer ${server.sign({ sub: 'u1', exp: Math.floor(Date.now() / 1000) - 60 }, { expiresIn: undefined })}` } }, 401, 'FST_EVSOCK_TOKEN_EXPIRED'],
    ['not yet valid', { headers: { authorization: `Bearer ${server.sign({ sub: 'u1' }, { notBefore: '1h' })}` } }, 401, 'FST_EVSOCK_TOKEN_EXPIRED'],
    ['no sub claim', { headers: { authorization: `Bearer ${server.sign({ role: 'admin' })}` } }, 401, 'FST_EVSOCK_BAD_TOKEN'],
    ['forbidden origin', { headers: { authorization: `Bearer ${valid}`, origin: 'https://evil.example' } }, 403, 'FST_EVSOCK_FORBIDDEN_ORIGIN'],
    ['unsupported subprotocol', { protocols: ['chat.v2'], headers: { authorization: `Bearer ${valid}` } }, 400, 'FST_EVSOCK_UNSUPPORTED_PROTOCOL'],
    ['only a bearer subprotocol', { protocols: [`bearer.${valid}`] }, 400, 'FST_EVSOCK_UNSUPPORTED_PROTOCOL'],
    ['query token while not allowed', {}, 401, 'FST_EVSOCK_NO_TOKEN']
  ]
  for (const [name, options, status, code] of cases) {
    const url = name.startsWith('query') ? `${server.url}?access_token=${valid}` : server.url
    const refusal = await attemptHandshake(url, options)
    t.equal(refusal.upgraded, false, `${name}: not upgraded`)
    t.equal(refusal.status, status, `${name}: status`)
    t.equal(refusal.body.code, code, `${name}: code`)
    t.equal(refusal.body.statusCode, status, `${name}: body statusCode`)
    t.type(refusal.body.message, 'string', `${name}: message`)
  }
  t.equal(server.app.eventSocket.stats().connections, 0)
})

t.test('an allowed origin, and a missing one, are admitted', async (t) => {
  const server = await startServer(t, { origins: ['https://app.example'] })
  const valid = server.sign({ sub: 'u1' })
  t.equal((await attemptHandshake(server.url, { headers: { authorization: `Bearer ${valid}`, origin: 'https://app.example' } })).status, 101)
  t.equal((await attemptHandshake(server.url, { headers: { authorization: `Bearer ${valid}` } })).status, 101)
})

t.test('allowMissingOrigin: false refuses a handshake without Origin', async (t) => {
  const server = await startServer(t, { origins: ['https://app.example'], allowMissingOrigin: false })
  const refusal = await attemptHandshake(server.url, { headers: { authorization: `Bearer ${server.sign({ sub: 'u1' })}` } })
  t.equal(refusal.status, 403)
  t.equal(refusal.body.code, 'FST_EVSOCK_FORBIDDEN_ORIGIN')
})

t.test('the query token is accepted only when allowQueryToken is on', async (t) => {
  const server = await startServer(t, { allowQueryToken: true })
  const refusal = await attemptHandshake(`${server.url}?access_token=${server.sign({ sub: 'u1' })}`)
  t.equal(refusal.status, 101)
})

t.test('the connection cap answers 503 FST_EVSOCK_BUSY', async (t) => {
  const server = await startServer(t, { maxConnections: 1 })
  await openClient(t, server)
  const refusal = await attemptHandshake(server.url, { headers: { authorization: `Bearer ${server.sign({ sub: 'u2' })}` } })
  t.equal(refusal.status, 503)
  t.equal(refusal.body.code, 'FST_EVSOCK_BUSY')
})

t.test('the per-address handshake limit answers 429 FST_EVSOCK_RATE_LIMITED', async (t) => {
  const server = await startServer(t, { handshakesPerMinute: 2 })
  const headers = { authorization: `Bearer ${server.sign({ sub: 'u1' })}` }
  t.equal((await attemptHandshake(server.url, { headers })).status, 101)
  t.equal((await attemptHandshake(server.url, { headers })).status, 101)
  const refusal = await attemptHandshake(server.url, { headers })
  t.equal(refusal.status, 429)
  t.equal(refusal.body.code, 'FST_EVSOCK_RATE_LIMITED')
})

t.test('format negotiation: the first offered format wins; none offered means JSON', async (t) => {
  const server = await startServer(t)
  const token = server.sign({ sub: 'u1' })
  const msgpackFirst = new TestClient(server.url, { token, protocols: ['evsock.v1.msgpack', 'evsock.v1.json'], format: 'msgpack' })
  const jsonFirst = new TestClient(server.url, { token, protocols: ['x-unknown', 'evsock.v1.json', 'evsock.v1.msgpack'] })
  const none = new TestClient(server.url, { token, protocols: [] })
  t.teardown(() => { for (const c of [msgpackFirst, jsonFirst, none]) c.ws.terminate() })
  await Promise.all([msgpackFirst.opened, jsonFirst.opened, none.opened])
  t.equal(msgpackFirst.ws.protocol, 'evsock.v1.msgpack')
  t.equal(jsonFirst.ws.protocol, 'evsock.v1.json')
  t.equal(none.ws.protocol, '')
  const [a, b, c] = await Promise.all([msgpackFirst, jsonFirst, none].map((client) => client.next((m) => m.op === 'hello')))
  t.equal(a?.user, 'u1')
  t.equal(b?.user, 'u1')
  t.equal(c?.user, 'u1')
})

t.test('a plain GET on the route answers 426 Upgrade Required', async (t) => {
  const server = await startServer(t)
  const response = await server.app.inject({ method: 'GET', url: '/events' })
  t.equal(response.statusCode, 426)
  t.equal(response.json().code, 'FST_EVSOCK_UPGRADE_REQUIRED')
})

function unsigned (payload: Record<string, unknown>): string {
  const encode = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
  return `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ ...payload, iat: Math.floor(Date.now() / 1000) })}.`
}

t.test('@fastify/jwt\'s trusted hook is honoured: 401 FST_EVSOCK_TOKEN_UNTRUSTED at the handshake, BAD_TOKEN on refresh', async (t) => {
  const asked: Array<{ url: string, tenant: unknown, jti: unknown }> = []
  const server = await startServer(t, {
    jwt: {
      secret: 'trusted-secret-at-least-32-characters!!',
      trusted: async (request, payload) => {
        asked.push({ url: request.url, tenant: request.headers['x-tenant'], jti: payload.jti })
        return payload.jti !== 'blocked'
      }
    }
  })
  const headers = (jti: string): Record<string, string> => ({ authorization: `Bearer ${server.sign({ sub: 'u1', jti })}`, 'x-tenant': 'acme' })
  const refusal = await attemptHandshake(server.url, { headers: headers('blocked') })
  t.equal(refusal.status, 401)
  t.equal(refusal.body.code, 'FST_EVSOCK_TOKEN_UNTRUSTED')
  t.same(asked, [{ url: '/events', tenant: 'acme', jti: 'blocked' }], 'trusted got the upgrade request and the verified claims')

  const client = new TestClient(server.url, { headers: headers('good') })
  t.teardown(() => client.ws.terminate())
  await client.next((m) => m.op === 'hello')
  client.send({ op: 'auth', id: 1, token: server.sign({ sub: 'u1', jti: 'blocked' }) })
  const answer = await client.next((m) => m.id === 1)
  t.equal(answer.op, 'error')
  t.equal(answer.code, 'BAD_TOKEN', 'an untrusted refresh is refused and the connection keeps its identity')
  t.same(asked.at(-1), { url: '/events', tenant: 'acme', jti: 'blocked' }, 'on refresh, with the connection\'s upgrade request')
  client.send({ op: 'auth', id: 2, token: server.sign({ sub: 'u1', jti: 'good-2' }) })
  t.equal((await client.next((m) => m.id === 2)).op, 'ok', 'a trusted refresh passes')
})
