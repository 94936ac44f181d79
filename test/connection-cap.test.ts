import t from 'tap'
import { connect } from 'node:net'
import { randomBytes } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { WebSocket } from 'ws'
import { attemptHandshake, delay, SECRET, startServer, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// maxConnections must hold at accept even when token verification awaits
// (a key resolved asynchronously, say from a JWKS endpoint): a slot is
// reserved before the await, so concurrent handshakes cannot all pass the cap.

const KEY_DELAY_MS = 150
const sign = createSigner({ key: SECRET, expiresIn: 3_600_000 })

/** `onKey` runs when a verification starts waiting for the key. */
async function slowKeyServer (t: Parameters<typeof startServer>[0], maxConnections: number, onKey = (): void => {}): Promise<TestServer> {
  return await startServer(t, {
    maxConnections,
    handshakesPerMinute: 0,
    jwt: { secret: async () => { onKey(); await delay(KEY_DELAY_MS); return SECRET } }
  })
}

const bearer = (sub: string): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${sign({ sub })}` } })

/** A handshake that keeps its socket open once admitted (closed at teardown); resolves with the status. */
async function holdOpen (t: Parameters<typeof startServer>[0], url: string, sub: string): Promise<{ status: number, code?: string }> {
  return await new Promise((resolve, reject) => {
    const ws = new WebSocket(url, bearer(sub))
    t.teardown(() => ws.terminate())
    ws.on('open', () => resolve({ status: 101 }))
    ws.on('unexpected-response', (_request, response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, code: JSON.parse(body).code }))
    })
    ws.on('error', (err) => { if (!err.message.startsWith('Unexpected server response')) reject(err) })
  })
}

t.test('concurrent handshakes with an async key resolver never exceed maxConnections; the rest get 503', async (t) => {
  const server = await slowKeyServer(t, 5)
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => holdOpen(t, server.url, `u${i}`)))
  const statuses = results.map((r) => r.status)
  t.equal(statuses.filter((s) => s === 101).length, 5, `exactly maxConnections admitted (${statuses.join(',')})`)
  t.equal(statuses.filter((s) => s === 503).length, 25, 'the others are refused with 503 before any upgrade')
  t.ok(results.filter((r) => r.status === 503).every((r) => r.code === 'FST_EVSOCK_BUSY'))
  t.equal(server.app.eventSocket.stats().connections, 5)
})

t.test('a handshake refused after its slot was reserved gives the slot back', async (t) => {
  const server = await slowKeyServer(t, 3)
  const bad = await Promise.all(Array.from({ length: 3 }, () => attemptHandshake(server.url, { headers: { authorization: 'Bearer not.a.token' } })))
  t.same(bad.map((r) => r.status), [401, 401, 401])
  const good = await Promise.all(Array.from({ length: 3 }, (_, i) => attemptHandshake(server.url, bearer(`u${i}`))))
  t.same(good.map((r) => r.status), [101, 101, 101], 'all three slots are free again')
})

t.test('a client that drops its connection during verification gives the slot back', async (t) => {
  let verifying = false
  const server = await slowKeyServer(t, 1, () => { verifying = true })
  // A handshake by hand, dropped while the key is still being resolved.
  const socket = connect(server.port, '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write([
    'GET /events HTTP/1.1', `Host: 127.0.0.1:${server.port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`, 'Sec-WebSocket-Version: 13',
    `Authorization: Bearer ${sign({ sub: 'dropper' })}`, '', ''
  ].join('\r\n'))
  await waitFor(() => verifying, { what: 'the server to start verifying the token' })
  socket.destroy()

  let status = 0
  await waitFor(async () => (status = (await attemptHandshake(server.url, bearer('next'))).status) === 101, {
    what: 'the next client to be admitted', timeoutMs: 40 * KEY_DELAY_MS, intervalMs: 20, detail: () => `last status ${status}`
  })
  t.equal(server.app.eventSocket.stats().connections, 1)
})
