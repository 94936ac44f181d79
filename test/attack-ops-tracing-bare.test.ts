import t from 'tap'
import { trace } from '@opentelemetry/api'
import type { EventSocketOptions } from '../lib/index.js'
import { requireBroker } from './helpers/broker.js'
import { publishForeign } from './helpers/foreign.js'
import { clusterOptions } from './helpers/instance.js'
import { traceCases } from './helpers/ops-trace-cases.js'
import { openClient, SECRET, startServer } from './helpers/server.js'
import { runScript } from './helpers/wait.js'
import { hidingPackage } from './helpers/hidden-package.js'

// The foreign trace headers of attack-ops-tracing.test.ts, where no SDK
// records anything: @opentelemetry/api installed but no provider registered
// (this file's process registers none), and the package not installed at
// all (a child process whose resolver finds none). Delivery must go on,
// every message in order, publishing too.

const cases = traceCases()
const expected = [...cases.map((_, i) => `trace.case${i}`), 'trace.sentinel']

/** The foreign messages of `traceCases()`, then a sentinel, on `exchange`. */
async function publishCases (exchange: string): Promise<void> {
  await publishForeign(exchange, [
    ...cases.map((each, i) => ({ what: each.what, routingKey: `trace.case${i}`, body: Buffer.from(JSON.stringify({ i })), properties: { headers: each.headers } })),
    { what: 'sentinel', routingKey: 'trace.sentinel', body: Buffer.from('{}') }
  ])
}

t.test('@opentelemetry/api installed, no SDK registered: every foreign message delivered in order, and publish works', async (t) => {
  if (!await requireBroker(t)) return
  t.notOk(trace.getTracer('probe').startSpan('probe').isRecording(), 'no SDK: spans record nothing')
  const options = clusterOptions(t, { history: false })
  const server = await startServer(t, options)
  const client = await openClient(t, server)
  client.ackEach()
  await client.subscribe('trace.#')
  await publishCases(options.broker?.exchange as string)
  await client.next((message) => message.op === 'event' && message.topic === 'trace.sentinel', { timeout: 10_000 })
  t.same(client.events().map((event) => event.topic), expected, 'every message delivered, in order')
  const { id } = await server.app.publish('trace.own', { n: 1 })
  await client.next((message) => message.id === id, { timeout: 10_000 })
  t.pass('the plugin\'s own publish is delivered too')
})

t.test('@opentelemetry/api not installed: every foreign message delivered in order, and publish works', async (t) => {
  if (!await requireBroker(t)) return
  const options: EventSocketOptions = clusterOptions(t, { history: false })
  const child = runScript(t, `
    ${hidingPackage('@opentelemetry/api')}
    const { default: Fastify } = await import('fastify')
    const { default: eventSocket } = await import('./lib/index.ts')
    const { TestClient } = await import('./test/helpers/server.ts')
    const lines = []
    const app = Fastify({ logger: { level: 'debug', stream: { write: (line) => { lines.push(line) } } } })
    await app.register(eventSocket, { jwt: { secret: ${JSON.stringify(SECRET)} }, ...${JSON.stringify(options)} })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const client = new TestClient('ws://127.0.0.1:' + app.server.address().port + '/events', { token: app.jwt.sign({ sub: 'u1', role: 'admin' }) })
    client.ackEach()
    await client.next((message) => message.op === 'hello')
    await client.subscribe('trace.#')
    console.log(JSON.stringify({ ready: true }))
    await client.next((message) => message.op === 'event' && message.topic === 'trace.sentinel', { timeout: 10000 })
    const { id } = await app.publish('trace.own', { n: 1 })
    await client.next((message) => message.id === id, { timeout: 10000 })
    const missing = lines.some((line) => line.includes('@opentelemetry/api is not installed'))
    console.log(JSON.stringify({ topics: client.events().map((event) => event.topic), missing }))
    client.close()
    await app.close()
  `)
  t.same(await child.firstLine, { ready: true }, 'the app registered without the package, its client subscribed')
  await publishCases(options.broker?.exchange as string)
  t.equal(await child.exited('the child to get every event and close', 20_000), 0, 'the child exited by itself')
  const { topics, missing } = JSON.parse(child.stdout().trim().split('\n').at(-1) as string) as { topics: string[], missing: boolean }
  t.ok(missing, 'the plugin found no @opentelemetry/api (its debug line says so)')
  t.same(topics, [...expected, 'trace.own'], 'every message delivered, in order, then its own publish')
})
