import { createHmac } from 'node:crypto'
import t from 'tap'
import { attemptHandshake, openClient, SECRET, startServer } from './helpers/server.js'

// Red-team attacks on the claims the plugin reads from a verified token: the
// issuer is trusted, but what it may legally write (numbers of any size as
// `sub`, a NumericDate with a fraction as `iat`) must not be misread here.

const bearer = (token: string): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${token}` } })
const base64url = (text: string): string => Buffer.from(text).toString('base64url')

/**
 * An HS256 token whose payload is `payloadJson` byte for byte: JSON.stringify
 * cannot write a number JavaScript cannot hold, and an issuer in another
 * language can.
 */
function rawToken (payloadJson: string): string {
  const head = `${base64url('{"alg":"HS256","typ":"JWT"}')}.${base64url(payloadJson)}`
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`
}

t.test('a numeric sub past 2^53 is refused: two users would otherwise share one sub', async (t) => {
  const server = await startServer(t)
  const exp = Math.floor(Date.now() / 1000) + 3600
  // Snowflake-style ids: distinct for the issuer, the same double once parsed.
  const alice = rawToken(`{"sub":12345678901234567891,"role":"user","exp":${exp}}`)
  const bob = rawToken(`{"sub":12345678901234567892,"role":"user","exp":${exp}}`)
  for (const [name, token] of [['alice', alice], ['bob', bob]] as const) {
    const refusal = await attemptHandshake(server.url, bearer(token))
    t.equal(refusal.status, 401, `${name}: 401`)
    t.equal(refusal.body.code, 'FST_EVSOCK_BAD_TOKEN', `${name}: FST_EVSOCK_BAD_TOKEN`)
  }
  // Neither is a user id either: a fraction, and a number JSON reads as Infinity.
  for (const sub of ['1.5', '1e400']) {
    const refusal = await attemptHandshake(server.url, bearer(rawToken(`{"sub":${sub},"exp":${exp}}`)))
    t.equal(refusal.status, 401, `sub ${sub}: 401`)
  }
  const safe = await openClient(t, server, { token: rawToken(`{"sub":9007199254740991,"role":"user","exp":${exp}}`) })
  t.equal(safe.messages[0]?.user, '9007199254740991', 'a safe integer sub still works, as its decimal string')
})

t.test('a token with a fractional iat, issued before a revocation in the same second, is refused', async (t) => {
  const server = await startServer(t)
  // Leave room in the current second for a token, then the revocation, then the checks.
  while (Date.now() % 1000 > 600 || Date.now() % 1000 < 50) await new Promise((resolve) => setTimeout(resolve, 10))
  const issuedMs = Date.now()
  const exp = Math.floor(issuedMs / 1000) + 3600
  const token = rawToken(`{"sub":"mallory","role":"user","iat":${issuedMs / 1000},"exp":${exp}}`)
  const client = await openClient(t, server, { token })
  while (Date.now() === issuedMs) await new Promise((resolve) => setImmediate(resolve))

  await server.app.eventSocket.revoke('mallory')

  t.same(await Promise.race([
    client.closed,
    new Promise((resolve) => setTimeout(() => resolve('still open after 2 s'), 2000))
  ]), { code: 4001, reason: 'token revoked' }, 'its open connection is closed')
  const refusal = await attemptHandshake(server.url, bearer(token))
  t.equal(refusal.status, 401, 'the handshake is refused')
  t.equal(refusal.body.code, 'FST_EVSOCK_TOKEN_REVOKED')
})
