import t from 'tap'
import { delay, openClient, startServer, TestClient } from './helpers/server.js'
import { runScript, within } from './helpers/wait.js'

// Shutdown in the middle of a publish stream: every publish that
// resolved reaches the subscriber before its socket closes with 1001, every
// other one rejects with FST_EVSOCK_CLOSED, and closing takes bounded time.

t.test('app.close() during a publish stream: resolved publishes are delivered, the rest reject with FST_EVSOCK_CLOSED', async (t) => {
  const server = await startServer(t)
  const subscriber = await openClient(t, server, { sub: 'stays' })
  await subscriber.subscribe('life.*')
  subscriber.ackEach()

  const resolved: string[] = []
  const rejected: unknown[] = []
  let attempted = 0
  const stop = { now: false }
  // Four publishers at once, as concurrent route handlers would be.
  const publishers = Array.from({ length: 4 }, async () => {
    while (!stop.now) {
      attempted++
      try {
        resolved.push((await server.app.publish('life.tick', attempted)).id)
      } catch (err) {
        rejected.push(err)
        if (rejected.length > 50) stop.now = true
      }
      await delay(0)
    }
  })
  await subscriber.next(() => subscriber.events().length >= 200, { timeout: 5000 })
  const started = Date.now()
  await server.app.close()
  const took = Date.now() - started
  // The publishers go on until 50 publishes were refused (or a second passed).
  setTimeout(() => { stop.now = true }, 1000).unref()
  await Promise.all(publishers)

  t.equal((await within(subscriber.closed, { what: 'the subscriber\'s close' })).code, 1001, 'the subscriber was closed with 1001')
  t.ok(took < 2000, `app.close() completed in ${took} ms`)
  // Every publish after the close is refused at once, so the publishers stop on the 51st refusal, not on the timer.
  t.ok(rejected.length > 50, `${rejected.length} publishes after the close rejected`)
  t.ok(rejected.every((err) => (err as { code?: string }).code === 'FST_EVSOCK_CLOSED'), 'every rejection is FST_EVSOCK_CLOSED')
  const delivered = new Set(subscriber.events().map((event) => event.id as string))
  const lost = resolved.filter((id) => !delivered.has(id))
  t.same(lost, [], `all ${resolved.length} resolved publishes were delivered`)
  t.equal(resolved.length + rejected.length, attempted, 'every publish settled')
})

t.test('SIGTERM wired to app.close() in a child process: sockets get 1001 and the process exits by itself, promptly', async (t) => {
  // What docs/security.md tells an app to do, run as a real process. The
  // child never calls process.exit: it exits only once app.close() left no
  // handle behind, so a leaked timer or socket shows up as a child still
  // running past the bound.
  const child = runScript(t, `
    import Fastify from 'fastify'
    import eventSocket from './lib/index.ts'
    const app = Fastify()
    await app.register(eventSocket, { jwt: { secret: ${JSON.stringify('sigterm-secret-at-least-32-characters!!')} } })
    process.once('SIGTERM', () => { app.close().catch(() => { process.exitCode = 1 }) })
    const address = await app.listen({ port: 0, host: '127.0.0.1' })
    setInterval(() => { app.publish('life.tick', Date.now()).catch(() => {}) }, 5).unref()
    process.stdout.write(JSON.stringify({ address, token: app.jwt.sign({ sub: 'u1', role: 'admin' }) }) + '\\n')
  `)
  const { address, token } = await child.firstLine as { address: string, token: string }

  const client = new TestClient(`${address.replace('http', 'ws')}/events`, { token })
  t.teardown(() => client.ws.terminate())
  await client.next((m) => m.op === 'hello', { timeout: 5000 })
  await client.subscribe('life.*')
  await client.next((m) => m.op === 'event')

  const started = Date.now()
  child.signal('SIGTERM')
  const [{ code }, exitCode] = await Promise.all([
    within(client.closed, { what: 'the socket to close after SIGTERM', timeoutMs: 5000 }),
    child.exited('the child to exit by itself after SIGTERM (a handle left open keeps it alive)', 5000)
  ])
  const took = Date.now() - started
  t.equal(code, 1001, 'the socket was closed with 1001')
  t.equal(exitCode, 0, 'the process exited cleanly')
  t.ok(took < 3000, `the process exited ${took} ms after SIGTERM`)
})
