import t from 'tap'
import WebSocket from 'ws'
import { attemptHandshake, openClient, startServer, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// revoke(sub) on the in-process bus: tokens of that sub issued up to the
// revocation's second are refused at the handshake and in `auth`, later ones
// are not (docs/security.md, "Revocation"). The cross-instance half is in
// revocation-cluster.test.ts.

const bearer = (token: string): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${token}` } })
const seconds = (ms: number): number => Math.floor(ms / 1000)

/** A token of `sub` whose `iat` is the second after the current one: issued after any revocation made so far. */
const issuedAfter = (server: TestServer, sub: string): string => server.sign({ sub, role: 'user', iat: seconds(Date.now()) + 1 })

t.test('revoke(sub) refuses that sub\'s earlier tokens at the handshake; later tokens and other users pass', async (t) => {
  const server = await startServer(t)
  const old = server.sign({ sub: 'mallory', role: 'user' })
  const noIat = server.app.jwt.sign({ sub: 'mallory', role: 'user' }, { noTimestamp: true, expiresIn: '1h' })
  const alice = server.sign({ sub: 'alice', role: 'user' })
  t.equal((await attemptHandshake(server.url, bearer(old))).status, 101, 'admitted before the revocation')
  t.equal((await attemptHandshake(server.url, bearer(noIat))).status, 101, 'a token without iat too')
  const before = Date.now()

  await server.app.eventSocket.revoke('mallory')

  for (const [name, token] of [
    ['the same token', old],
    ['a token without iat', noIat],
    ['a token issued in the revocation\'s second', server.sign({ sub: 'mallory', role: 'user', iat: seconds(before) })]
  ] as const) {
    const refusal = await attemptHandshake(server.url, bearer(token))
    t.equal(refusal.status, 401, `${name}: 401`)
    t.equal(refusal.body.code, 'FST_EVSOCK_TOKEN_REVOKED', `${name}: FST_EVSOCK_TOKEN_REVOKED`)
  }
  t.equal((await attemptHandshake(server.url, bearer(issuedAfter(server, 'mallory')))).status, 101, 'a token issued after is admitted')
  t.equal((await attemptHandshake(server.url, bearer(alice))).status, 101, 'another user is untouched')
})

t.test('revoke closes the sub\'s open connections with 4001, and an auth refresh with a revoked token closes with 4001', async (t) => {
  const server = await startServer(t)
  const old = server.sign({ sub: 'mallory', role: 'user' })
  const first = await openClient(t, server, { token: old })
  const second = await openClient(t, server, { token: old })
  const alice = await openClient(t, server, { sub: 'alice', role: 'user' })

  t.equal(await server.app.eventSocket.revoke('mallory'), 2)
  for (const client of [first, second]) t.same(await client.closed, { code: 4001, reason: 'token revoked' })
  t.equal(alice.ws.readyState, WebSocket.OPEN, 'other users keep their sockets')

  const fresh = await openClient(t, server, { token: issuedAfter(server, 'mallory') })
  t.equal(await server.app.eventSocket.revoke('nobody'), 0)
  fresh.send({ op: 'auth', id: 1, token: old })
  t.same(await fresh.closed, { code: 4001, reason: 'token revoked' }, 'refreshing with the revoked token closes the socket')
})

t.test('a revocation is forgotten after revocationTtlMs', async (t) => {
  const server = await startServer(t, { revocationTtlMs: 200 })
  const old = server.sign({ sub: 'mallory', role: 'user' })
  await server.app.eventSocket.revoke('mallory')
  t.equal((await attemptHandshake(server.url, bearer(old))).body.code, 'FST_EVSOCK_TOKEN_REVOKED')
  let status = 0
  await waitFor(async () => (status = (await attemptHandshake(server.url, bearer(old))).status) === 101, {
    what: 'the old token to be admitted again once the entry expired', timeoutMs: 5000, intervalMs: 50, detail: () => `last status ${status}`
  })
  t.pass('the old token is admitted again once the entry expired')
})

t.test('revoke refuses a sub that is not a non-empty string, and revocationTtlMs is validated', async (t) => {
  const server = await startServer(t)
  await t.rejects(server.app.eventSocket.revoke(''), TypeError)
  await t.rejects(server.app.eventSocket.revoke(42 as unknown as string), TypeError)
  await t.rejects(startServer(t, { revocationTtlMs: 0 }), { code: 'FST_EVSOCK_BAD_OPTION' })
})
