import t from 'tap'
import { createPublicKey, generateKeyPairSync, type JsonWebKey } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createSigner } from 'fast-jwt'
import type { FastifyRequest } from 'fastify'
import type { TokenOrHeader } from '@fastify/jwt'
import { attemptHandshake, openClient, startServer, type TestServer } from './helpers/server.js'

// @fastify/jwt's documented get-jwks recipe: a function `secret(request, decodedToken)`
// resolving the public key by `kid`. The plugin must call it the way
// request.jwtVerify does, at the handshake and in an `auth` refresh.

const issuer = generateKeyPairSync('rsa', { modulusLength: 2048 })
const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 })
const KID = 'key-2026'

/** Serves `{ keys: [issuer's public JWK] }` on 127.0.0.1 and returns its URL. */
async function serveJwks (t: Parameters<typeof startServer>[0]): Promise<string> {
  const jwk = { ...issuer.publicKey.export({ format: 'jwk' }), kid: KID, alg: 'RS256', use: 'sig' }
  const http = createServer((_request, response) => {
    response.setHeader('content-type', 'application/json')
    response.end(JSON.stringify({ keys: [jwk] }))
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => http.close(() => resolve())))
  return `http://127.0.0.1:${(http.address() as AddressInfo).port}/.well-known/jwks.json`
}

/** The small resolver an app writes in place of get-jwks: fetch the set, pick the key by kid. */
function keyResolver (jwksUrl: string, seen: Array<{ url: string, kid: unknown }>) {
  return async (request: FastifyRequest, token: TokenOrHeader): Promise<string> => {
    // With `decode: { complete: true }` the token comes whole, header and payload.
    const kid = 'header' in token ? token.header.kid : token.kid
    seen.push({ url: request.url, kid })
    const { keys } = await (await fetch(jwksUrl)).json() as { keys: Array<JsonWebKey & { kid: string }> }
    const jwk = keys.find((key) => key.kid === kid)
    if (jwk === undefined) throw new Error(`no key ${String(kid)}`)
    return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
  }
}

const signer = (key: typeof issuer.privateKey, kid: string): (claims: Record<string, unknown>) => string =>
  createSigner({ key: key.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256', kid, expiresIn: 3_600_000 })

const bearer = (token: string): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${token}` } })

t.test('RS256 tokens resolved through a JWKS by kid: admitted at the handshake and in auth; unknown kid and tampering refused', async (t) => {
  const jwksUrl = await serveJwks(t)
  const seen: Array<{ url: string, kid: unknown }> = []
  const server: TestServer = await startServer(t, {
    jwt: { decode: { complete: true }, secret: keyResolver(jwksUrl, seen), verify: { algorithms: ['RS256'] } }
  })
  const sign = signer(issuer.privateKey, KID)
  const token = sign({ sub: 'alice', role: 'user' })

  const client = await openClient(t, server, { token })
  t.equal(client.messages[0]?.user, 'alice', 'admitted at the handshake')
  t.same(seen.at(-1), { url: '/events', kid: KID }, 'the secret function got the upgrade request and the decoded token')

  client.send({ op: 'auth', id: 1, token: sign({ sub: 'alice', role: 'user', exp: Math.floor(Date.now() / 1000) + 7200 }) })
  const answer = await client.next((m) => m.id === 1)
  t.equal(answer.op, 'ok', 'accepted on refresh')
  t.same(seen.at(-1), { url: '/events', kid: KID }, 'the refresh called it with the connection\'s upgrade request')

  const [header, payload, signature] = token.split('.') as [string, string, string]
  const raised = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url').toString()), role: 'admin' })).toString('base64url')
  for (const [name, bad] of [
    ['unknown kid', signer(issuer.privateKey, 'other-kid')({ sub: 'alice' })],
    ['known kid, signed by another key', signer(stranger.privateKey, KID)({ sub: 'alice' })],
    ['tampered payload', `${header}.${raised}.${signature}`]
  ] as const) {
    const refusal = await attemptHandshake(server.url, bearer(bad))
    t.equal(refusal.status, 401, `${name}: 401`)
    t.equal(refusal.body.code, 'FST_EVSOCK_BAD_TOKEN', `${name}: FST_EVSOCK_BAD_TOKEN`)
    const from = client.messages.length
    client.send({ op: 'auth', id: 2, token: bad })
    t.equal((await client.next((m) => m.id === 2, { from })).code, 'BAD_TOKEN', `${name}: BAD_TOKEN on refresh`)
  }
})
