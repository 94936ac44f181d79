import t from 'tap'
import { createHmac, createSign, generateKeyPairSync } from 'node:crypto'
import WebSocket from 'ws'
import { attemptHandshake, openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'

// Token attacks. handshake.test.ts covers alg none, expiry and nbf on
// an HS256 server, and lifetime.test.ts an `auth` for another sub; here every
// forgery is tried on an RS256 server (where algorithm confusion is possible)
// and with issuer and audience checks, both at the handshake and in an `auth`.

type Claims = Record<string, unknown>

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const now = (): number => Math.floor(Date.now() / 1000)

/** Builds a JWT by hand, so that the header can say anything. */
function forge (header: Claims, payload: Claims, sign: (input: string) => string): string {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${sign(input)}`
}

const rs256 = (privateKey: string) => (input: string): string => createSign('RSA-SHA256').update(input).sign(privateKey, 'base64url')
const hs256 = (key: string | Buffer) => (input: string): string => createHmac('sha256', key).update(input).digest('base64url')

function keyPair (): { privateKey: string, publicKey: string } {
  return generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' }
  })
}

const server = keyPair()
const stranger = keyPair()

/** The forgeries, each with the handshake code docs/protocol.md section 1 gives it. */
function attacks (valid: string): Array<[string, string, string]> {
  const claims = { sub: 'u1', role: 'user', iat: now(), exp: now() + 3600 }
  const [header, payload, signature] = valid.split('.') as [string, string, string]
  return [
    ['alg none', forge({ alg: 'none', typ: 'JWT' }, claims, () => ''), 'FST_EVSOCK_BAD_TOKEN'],
    ['alg None with a signature', forge({ alg: 'None', typ: 'JWT' }, claims, () => 'x'), 'FST_EVSOCK_BAD_TOKEN'],
    ['HS256 signed with the public key (algorithm confusion)', forge({ alg: 'HS256', typ: 'JWT' }, claims, hs256(server.publicKey)), 'FST_EVSOCK_BAD_TOKEN'],
    ['RS256 signed by another key', forge({ alg: 'RS256', typ: 'JWT' }, claims, rs256(stranger.privateKey)), 'FST_EVSOCK_BAD_TOKEN'],
    ['tampered payload (role raised to admin)', `${header}.${b64({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), role: 'admin' })}.${signature}`, 'FST_EVSOCK_BAD_TOKEN'],
    ['tampered header (alg switched to HS256)', `${b64({ alg: 'HS256', typ: 'JWT' })}.${payload}.${signature}`, 'FST_EVSOCK_BAD_TOKEN'],
    ['signature stripped', `${header}.${payload}.`, 'FST_EVSOCK_BAD_TOKEN'],
    ['expired', forge({ alg: 'RS256', typ: 'JWT' }, { ...claims, exp: now() - 60 }, rs256(server.privateKey)), 'FST_EVSOCK_TOKEN_EXPIRED'],
    ['nbf in the future', forge({ alg: 'RS256', typ: 'JWT' }, { ...claims, nbf: now() + 3600 }, rs256(server.privateKey)), 'FST_EVSOCK_TOKEN_EXPIRED'],
    ['roles not an array (type confusion)', forge({ alg: 'RS256', typ: 'JWT' }, { ...claims, roles: 'xadminx' }, rs256(server.privateKey)), 'FST_EVSOCK_BAD_TOKEN'],
    ['role not a string (type confusion)', forge({ alg: 'RS256', typ: 'JWT' }, { ...claims, role: ['admin'] }, rs256(server.privateKey)), 'FST_EVSOCK_BAD_TOKEN']
  ]
}

async function rsaServer (t: Parameters<typeof startServer>[0]): Promise<TestServer> {
  return await startServer(t, { jwt: { secret: { private: server.privateKey, public: server.publicKey }, sign: { algorithm: 'RS256' } } })
}

/** Sends `auth` with `token` and returns the answer. */
async function refresh (client: TestClient, id: number, token: string): Promise<Record<string, unknown>> {
  client.send({ op: 'auth', id, token })
  return await client.next((m) => m.id === id && (m.op === 'ok' || m.op === 'error'))
}

t.test('on an RS256 server every forged, expired or not-yet-valid token is refused before the upgrade', async (t) => {
  const app = await rsaServer(t)
  const valid = app.sign({ sub: 'u1', role: 'user' })
  t.equal(JSON.parse(Buffer.from(valid.split('.')[0]!, 'base64url').toString()).alg, 'RS256')
  t.equal((await attemptHandshake(app.url, { headers: { authorization: `Bearer ${valid}` } })).status, 101, 'the genuine token is admitted')
  for (const [name, token, code] of attacks(valid)) {
    for (const carrier of ['header', 'subprotocol'] as const) {
      const refusal = await attemptHandshake(app.url, carrier === 'header'
        ? { headers: { authorization: `Bearer ${token}` } }
        : { protocols: ['evsock.v1.json', `bearer.${token}`] })
      t.equal(refusal.upgraded, false, `${name} (${carrier}): not upgraded`)
      t.equal(refusal.status, 401, `${name} (${carrier}): 401`)
      t.equal(refusal.body.code, code, `${name} (${carrier}): ${code}`)
    }
  }
  t.equal(app.app.eventSocket.stats().connections, 0)
})

t.test('on an RS256 server the same tokens in an auth refresh are BAD_TOKEN and change nothing', async (t) => {
  const app = await rsaServer(t)
  const client = await openClient(t, app, { sub: 'u1', role: 'user' })
  const expiresAt = client.messages[0]!.expiresAt
  let id = 100
  for (const [name, token] of attacks(app.sign({ sub: 'u1', role: 'user' }))) {
    const answer = await refresh(client, ++id, token)
    t.equal(answer.op, 'error', name)
    t.equal(answer.code, 'BAD_TOKEN', name)
  }
  t.equal(client.ws.readyState, WebSocket.OPEN, 'a failed refresh does not close the socket')
  t.equal((await client.subscribe('orders.*')).code, 'FORBIDDEN', 'the tampered admin role was not taken')
  const good = await refresh(client, ++id, app.sign({ sub: 'u1', role: 'user' }, { expiresIn: '2h' }))
  t.equal(good.op, 'ok', 'a genuine refresh still works')
  t.ok((good.expiresAt as number) > expiresAt, 'and moves the expiry')
})

const issAudSecret = 'iss-aud-secret-at-least-32-characters!!'
const issAudToken = (claims: Claims): string =>
  forge({ alg: 'HS256', typ: 'JWT' }, { sub: 'u1', iat: now(), exp: now() + 3600, ...claims }, hs256(issAudSecret))

t.test('with allowedIss, allowedAud and requiredClaims configured, a wrong or missing issuer or audience is refused', async (t) => {
  const app = await startServer(t, {
    jwt: { secret: issAudSecret, verify: { allowedIss: 'auth.example', allowedAud: 'evsock', requiredClaims: ['iss', 'aud'] } }
  })
  const token = issAudToken
  const admitted = await attemptHandshake(app.url, { headers: { authorization: `Bearer ${token({ iss: 'auth.example', aud: 'evsock' })}` } })
  t.equal(admitted.status, 101, 'the right issuer and audience are admitted')
  const cases: Array<[string, Claims]> = [
    ['wrong issuer', { iss: 'evil.example', aud: 'evsock' }],
    ['no issuer', { aud: 'evsock' }],
    ['wrong audience', { iss: 'auth.example', aud: 'other-service' }],
    ['no audience', { iss: 'auth.example' }]
  ]
  for (const [name, claims] of cases) {
    const refusal = await attemptHandshake(app.url, { headers: { authorization: `Bearer ${token(claims)}` } })
    t.equal(refusal.status, 401, name)
    t.equal(refusal.body.code, 'FST_EVSOCK_BAD_TOKEN', name)
  }
  const client = await openClient(t, app, { token: token({ iss: 'auth.example', aud: 'evsock' }) })
  let id = 0
  for (const [name, claims] of cases) t.equal((await refresh(client, ++id, token(claims))).code, 'BAD_TOKEN', `auth: ${name}`)
})

t.test('allowedIss alone does not make iss required (fast-jwt): why docs/security.md says to add requiredClaims', async (t) => {
  const app = await startServer(t, { jwt: { secret: issAudSecret, verify: { allowedIss: 'auth.example' } } })
  const headers = (claims: Claims): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${issAudToken(claims)}` } })
  t.equal((await attemptHandshake(app.url, headers({ iss: 'evil.example' }))).status, 401, 'a wrong issuer is refused')
  t.equal((await attemptHandshake(app.url, headers({}))).status, 101, 'a token without iss passes unless requiredClaims names it')
})

t.test('a sub that is not one literal topic word gets nothing beyond its own topics from the default authorize', async (t) => {
  const app = await startServer(t)
  // A sub of `*` or `#` (or with a dot) would otherwise turn `user.<sub>.…` into a wildcard over every user.
  for (const [sub, pattern] of [['*', 'user.*.inbox'], ['#', 'user.#'], ['*', 'user.*'], ['a.b', 'user.a.b'], ['7.#', 'user.7.#.x']]) {
    const client = await openClient(t, app, { sub, role: 'user' })
    t.equal((await client.subscribe(pattern!)).code, 'FORBIDDEN', `sub ${sub} may not subscribe to ${pattern}`)
    client.close()
  }
  const plain = await openClient(t, app, { sub: 'alice', role: 'user' })
  t.equal((await plain.subscribe('user.alice.inbox')).op, 'ok', 'a plain sub keeps its own topics')
})
