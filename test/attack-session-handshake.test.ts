import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import { randomBytes } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { WebSocket } from 'ws'
import { attemptHandshake, delay, SECRET, startServer, type Refusal, type TestServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// Red-team attack on commit 569cf99 (lib/handshake.ts): the slot a handshake
// reserves is given back through the ServerResponse @fastify/websocket
// assigned to the socket, not a listener on the socket. Clients drop at every
// stage of the handshake, handshakes are refused for every reason (ours and
// the app's own hooks after ours), all at once; afterwards exactly
// maxConnections clients must be admitted and one more refused with 503:
// a slot leaked admits fewer, a slot given back twice admits more.

const KEY_DELAY_MS = 80
const GOOD_ORIGIN = 'http://good.example'
const sign = createSigner({ key: SECRET, expiresIn: 3_600_000 })

type Stage = 'app-before' | 'app-done' | 'key' | 'app-after'

interface Probe {
  /** Requests currently at each stage, by their x-tag header. */
  at: Map<string, Stage>
}

/**
 * A server whose key resolves slowly (the verification awaits), with app hooks:
 * - a global onRequest hook that awaits for requests tagged x-slow-app (it runs before the plugin's route hook);
 * - a preValidation hook (after the plugin's onRequest) that awaits for x-slow-pre and refuses x-refuse with 403.
 */
async function attackServer (t: Test, maxConnections: number, probe: Probe): Promise<TestServer> {
  return await startServer(t, {
    maxConnections,
    handshakesPerMinute: 0,
    origins: [GOOD_ORIGIN],
    allowMissingOrigin: false,
    jwt: {
      secret: async (request: { headers: Record<string, string | string[] | undefined> }) => {
        const tag = request.headers['x-tag']
        if (typeof tag === 'string') probe.at.set(tag, 'key')
        await delay(KEY_DELAY_MS)
        return SECRET
      }
    }
  }, (app) => {
    app.addHook('onRequest', async (request) => {
      if (request.headers['x-slow-app'] === undefined) return
      probe.at.set(String(request.headers['x-tag']), 'app-before')
      await delay(KEY_DELAY_MS)
      probe.at.set(String(request.headers['x-tag']), 'app-done')
    })
    app.addHook('preValidation', async (request, reply) => {
      if (request.headers['x-slow-pre'] !== undefined) {
        probe.at.set(String(request.headers['x-tag']), 'app-after')
        await delay(KEY_DELAY_MS)
      }
      if (request.headers['x-refuse'] !== undefined) {
        await reply.code(403).send({ code: 'APP_REFUSED' })
      }
    })
  })
}

const goodHeaders = (sub: string, extra: Record<string, string> = {}): Record<string, string> =>
  ({ authorization: `Bearer ${sign({ sub })}`, origin: GOOD_ORIGIN, ...extra })

/** A handshake written by hand over TCP, so that it can be dropped at any moment. */
async function rawHandshake (port: number, headers: Record<string, string>): Promise<Socket> {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  await within(new Promise((resolve) => socket.once('connect', resolve)), { what: 'a TCP connection', timeoutMs: 5000 })
  socket.write([
    'GET /events HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`, 'Sec-WebSocket-Version: 13',
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`), '', ''
  ].join('\r\n'))
  return socket
}

/** 'fin' closes the TCP connection (the server may keep its half open a while); 'rst' resets it (the server's socket closes at once). */
type Drop = 'fin' | 'rst'

/** Drops a hand-written handshake once the server has it at `stage`. */
async function dropAt (t: Test, server: TestServer, probe: Probe, stage: Stage, tag: string, extra: Record<string, string> = {}, how: Drop = 'fin'): Promise<void> {
  const socket = await rawHandshake(server.port, goodHeaders(tag, { 'x-tag': tag, ...extra }))
  t.teardown(() => socket.destroy())
  let answered = false
  socket.once('data', () => { answered = true })
  socket.once('close', () => { answered = true })
  await waitFor(() => probe.at.get(tag) === stage || answered, { what: `handshake ${tag} to reach stage ${stage}`, detail: () => String(probe.at.get(tag)) })
  if (how === 'rst') socket.resetAndDestroy()
  else socket.destroy()
  if (probe.at.get(tag) !== stage) throw new Error(`handshake ${tag} was answered before reaching stage ${stage}`)
}

/** A handshake that stays open once admitted; resolves with its status. */
async function holdOpen (t: Test, server: TestServer, sub: string): Promise<{ status: number, ws: WebSocket }> {
  return await within(new Promise((resolve, reject) => {
    const ws = new WebSocket(server.url, { headers: goodHeaders(sub) })
    t.teardown(() => ws.terminate())
    ws.on('open', () => resolve({ status: 101, ws }))
    ws.on('unexpected-response', (_request, response) => {
      response.resume()
      response.on('end', () => resolve({ status: response.statusCode ?? 0, ws }))
    })
    ws.on('error', (err) => { if (!err.message.startsWith('Unexpected server response')) reject(err) })
  }), { what: `an answer to the handshake of ${sub}`, timeoutMs: 5000 })
}

/** attemptHandshake, bounded. */
async function attempt (url: string, headers: Record<string, string>): Promise<Refusal> {
  return await within(attemptHandshake(url, { headers }), { what: 'an answer to a handshake', timeoutMs: 5000 })
}

/**
 * Waits for every connection to be gone, then proves the cap is whole: exactly
 * `max` clients are admitted one after another and held, the next gets 503.
 * A handshake still in flight (verifying a dropped client's token) holds its
 * slot for a moment: the attempt is then closed and made again, boundedly. A
 * slot leaked or given back twice is for good, so the wait fails with the
 * statuses seen.
 */
async function assertCapWhole (t: Test, server: TestServer, max: number, what: string): Promise<void> {
  const gone = async (): Promise<void> => await waitFor(() => server.app.eventSocket.stats().connections === 0, {
    what: `every connection of ${what} to be gone`, detail: () => JSON.stringify(server.app.eventSocket.stats().connections)
  })
  await gone()
  const wanted = `${Array.from({ length: max }, () => 101).join(',')} then 503`
  let seen = ''
  await waitFor(async () => {
    const opened: Array<{ status: number, ws: WebSocket }> = []
    for (let i = 0; i < max; i++) opened.push(await holdOpen(t, server, `after-${i}`))
    const over = await holdOpen(t, server, 'one-too-many')
    seen = `${opened.map((h) => h.status).join(',')} then ${over.status}`
    if (seen === wanted) return true
    for (const h of [...opened, over]) h.ws.close()
    await gone()
    return false
  }, { what: `exactly maxConnections (${max}) to be admitted after ${what}, then 503`, timeoutMs: 5000, intervalMs: 50, detail: () => `last attempt: ${seen}` })
  t.equal(seen, wanted, `after ${what}: exactly maxConnections (${max}) new clients are admitted, one more gets 503`)
  t.equal(server.app.eventSocket.stats().connections, max, 'and the plugin counts exactly maxConnections open')
}

// Fastify runs an app's global onRequest hooks before a route's own, so the
// plugin's hook can run for a client that is already gone: reset, its socket
// (and the response assigned to it) closed before the plugin listened.
async function dropBeforePluginHook (t: Test, server: TestServer, probe: Probe, tag: string, how: Drop): Promise<void> {
  await dropAt(t, server, probe, 'app-before', tag, { 'x-slow-app': '1' }, how)
  // The app's hook is over: the plugin's runs next for the gone client, in the same turn.
  await waitFor(() => probe.at.get(tag) === 'app-done' || probe.at.get(tag) === 'key', { what: `the app's hook to finish for ${tag} after it dropped`, detail: () => String(probe.at.get(tag)) })
}

for (const how of ['fin', 'rst'] as const) {
  t.test(`a client dropped (${how}) during an app's own onRequest hook, before the plugin's, gives its slot back`, async (t) => {
    const probe: Probe = { at: new Map() }
    const server = await attackServer(t, 1, probe)
    await dropBeforePluginHook(t, server, probe, 'early-dropper', how)
    await assertCapWhole(t, server, 1, `a drop (${how}) during the app's onRequest hook`)
  })

  t.test(`several clients dropped (${how}) during an app's onRequest hook: every slot comes back`, async (t) => {
    const probe: Probe = { at: new Map() }
    const server = await attackServer(t, 3, probe)
    await Promise.all(Array.from({ length: 3 }, (_, i) => dropBeforePluginHook(t, server, probe, `early-${i}`, how)))
    await assertCapWhole(t, server, 3, `three drops (${how}) during the app's onRequest hook`)
  })

  t.test(`a client dropped (${how}) during verification gives its slot back`, async (t) => {
    const probe: Probe = { at: new Map() }
    const server = await attackServer(t, 2, probe)
    await dropAt(t, server, probe, 'key', 'verifying-dropper', {}, how)
    await assertCapWhole(t, server, 2, `a drop (${how}) during verification`)
  })

  t.test(`a client dropped (${how}) after verification, while an app preValidation hook awaits, gives its slot back once`, async (t) => {
    const probe: Probe = { at: new Map() }
    const server = await attackServer(t, 2, probe)
    await dropAt(t, server, probe, 'app-after', 'late-dropper', { 'x-slow-pre': '1' }, how)
    await assertCapWhole(t, server, 2, `a drop (${how}) between verification and the upgrade`)
  })
}

t.test('handshakes the app refuses after the plugin admitted them give their slots back', async (t) => {
  const probe: Probe = { at: new Map() }
  const server = await attackServer(t, 2, probe)
  // Two at a time: the cap (2) admits both past the plugin's hook, then the app refuses them.
  const refused = []
  for (let round = 0; round < 3; round++) {
    refused.push(...await Promise.all([0, 1].map((i) => attempt(server.url, goodHeaders(`refused-${round}-${i}`, { 'x-refuse': '1' })))))
  }
  t.same(refused.map((r) => r.status), [403, 403, 403, 403, 403, 403], 'all refused by the app with its own 403 (none with 503: each pair\'s slots came back)')
  t.ok(refused.every((r) => r.body.code === 'APP_REFUSED'), 'by the app\'s hook, after the plugin\'s admitted them')
  await assertCapWhole(t, server, 2, 'six refusals by the app\'s preValidation hook')
})

/** A hand-written handshake dropped as soon as the 101 arrives (before or with the hello); resolves with the status line. */
async function dropAfter101 (t: Test, server: TestServer, tag: string, how: Drop): Promise<string> {
  const socket = await rawHandshake(server.port, goodHeaders(tag))
  t.teardown(() => socket.destroy())
  let head = ''
  socket.on('data', (chunk: Buffer) => { head += chunk.toString('latin1') })
  let closed = false
  socket.once('close', () => { closed = true })
  await waitFor(() => head.includes('\r\n') || closed, { what: `an answer to ${tag}` })
  if (how === 'rst') socket.resetAndDestroy()
  else socket.destroy()
  return head.slice(0, head.indexOf('\r\n'))
}

/** One wave of every kind of drop and refusal, `rounds` times over, all at once; resolves with what each got. */
async function storm (t: Test, server: TestServer, probe: Probe, wave: string, rounds: number): Promise<{ reached: number, statuses: number[] }> {
  const drops: Array<Promise<boolean>> = []
  const attempts: Array<Promise<number>> = []
  for (let round = 0; round < rounds; round++) {
    const how: Drop = round % 2 === 0 ? 'fin' : 'rst'
    const other: Drop = how === 'fin' ? 'rst' : 'fin'
    const tag = `${wave}-${round}`
    drops.push(
      dropAt(t, server, probe, 'app-before', `app-${tag}`, { 'x-slow-app': '1' }, how).then(() => true, () => false),
      dropAt(t, server, probe, 'key', `key-${tag}`, {}, how).then(() => true, () => false),
      dropAt(t, server, probe, 'app-after', `pre-${tag}`, { 'x-slow-pre': '1' }, other).then(() => true, () => false),
      dropAfter101(t, server, `after101-${tag}`, how).then((line) => line.startsWith('HTTP/1.1 101'))
    )
    attempts.push(...[
      attempt(server.url, goodHeaders(`open-then-drop-${tag}`)),
      attempt(server.url, { authorization: 'Bearer not.a.token', origin: GOOD_ORIGIN }),
      attempt(server.url, goodHeaders(`bad-origin-${tag}`, { origin: 'http://evil.example' })),
      attempt(server.url, goodHeaders(`app-refused-${tag}`, { 'x-refuse': '1' }))
    ].map(async (attempt) => (await attempt).status))
  }
  const reached = (await Promise.all(drops)).filter((ok) => ok).length
  return { reached, statuses: await Promise.all(attempts) }
}

t.test('a storm of drops at every stage and refusals of every kind, concurrently: exactly maxConnections afterwards', async (t) => {
  // Room for the whole storm (4 rounds of 8): every handshake reserves a slot, none is refused for the cap.
  const MAX = 40
  const probe: Probe = { at: new Map() }
  const server = await attackServer(t, MAX, probe)
  const { reached, statuses } = await storm(t, server, probe, 'roomy', 4)
  t.equal(reached, 16, 'every drop happened at its stage (during the app\'s hook, verification, the app\'s later hook, after the 101)')
  t.same(statuses, [101, 401, 403, 403, 101, 401, 403, 403, 101, 401, 403, 403, 101, 401, 403, 403],
    'admitted then dropped; bad token 401; bad origin 403; refused by the app after the plugin 403')
  await assertCapWhole(t, server, MAX, 'the storm')
})

t.test('the same storm against a cap nearly full: 503s mixed in, and still exactly maxConnections afterwards', async (t) => {
  const MAX = 6
  const probe: Probe = { at: new Map() }
  const server = await attackServer(t, MAX, probe)
  const holders = await Promise.all(Array.from({ length: MAX - 2 }, (_, i) => holdOpen(t, server, `holder-${i}`)))
  t.same(holders.map((h) => h.status), [101, 101, 101, 101], 'the cap nearly full')
  const { statuses } = await storm(t, server, probe, 'tight', 4)
  t.ok(statuses.every((status) => [101, 401, 403, 503].includes(status)), `only expected statuses (${statuses.join(',')})`)
  t.ok(statuses.includes(503), 'some were refused for the cap')
  for (const holder of holders) holder.ws.close()
  await assertCapWhole(t, server, MAX, 'the storm against a nearly full cap')
})

t.test('a slot is never counted twice: a connection closed after upgrade frees exactly one slot', async (t) => {
  const probe: Probe = { at: new Map() }
  const server = await attackServer(t, 2, probe)
  const a = await holdOpen(t, server, 'a')
  const b = await holdOpen(t, server, 'b')
  t.same([a.status, b.status], [101, 101])
  t.equal((await holdOpen(t, server, 'c')).status, 503, 'full')
  a.ws.close()
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'a to be gone' })
  const d = await holdOpen(t, server, 'd')
  t.equal(d.status, 101, 'its one slot is back')
  t.equal((await holdOpen(t, server, 'e')).status, 503, 'and only one: the response\'s close after the upgrade gave nothing back again')
  b.ws.close()
  d.ws.close()
  await assertCapWhole(t, server, 2, 'closes after upgrades')
})
