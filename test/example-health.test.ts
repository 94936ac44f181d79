import t from 'tap'
import { METRICS_CONTENT_TYPE } from '../lib/index.js'
import { buildExample } from '../example/server.js'
import { startAmqpProxy } from './helpers/amqp-proxy.js'
import { requireBroker } from './helpers/broker.js'
import { clusterOptions } from './helpers/instance.js'
import { parsePrometheus, type Scrape } from './helpers/prom-text.js'
import { SECRET } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// The example's health port: /health/live (liveness, cheap), /health/ready
// (the delivery probe; 503 when it does not come back), the older /health,
// and /metrics (Prometheus text).

async function get (port: number, path: string): Promise<{ status: number, body: Record<string, unknown> | undefined }> {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) })
  const text = await response.text()
  return { status: response.status, body: text === '' ? undefined : JSON.parse(text) as Record<string, unknown> }
}

t.test('in process: live, ready and health answer 200 with the plugin\'s health, anything else 404', async (t) => {
  const example = await buildExample({ port: 0, healthPort: 0, jwtSecret: SECRET })
  t.teardown(() => example.close())
  const live = await get(example.healthPort, '/health/live')
  t.equal(live.status, 200)
  t.equal(live.body?.status, 'ok')
  const ready = await get(example.healthPort, '/health/ready')
  t.equal(ready.status, 200)
  t.equal(ready.body?.status, 'ok')
  t.equal(typeof ready.body?.probeMs, 'number', 'ready answers with the probe\'s round trip')
  t.equal((await get(example.healthPort, '/health')).status, 200, '/health still answers')
  t.equal((await get(example.healthPort, '/health/nope')).status, 404)
  t.equal((await get(example.port, '/health/ready')).status, 404, 'health routes are not on the app\'s port')
})

t.test('on RabbitMQ: /health/ready answers 503 with the reason while deliveries are stalled, /health/live stays 200, and ready comes back', async (t) => {
  if (!await requireBroker(t)) return
  const proxy = await startAmqpProxy(t)
  const exchange = clusterOptions(t).broker?.exchange as string
  const example = await buildExample({ port: 0, healthPort: 0, jwtSecret: SECRET, amqpUrl: proxy.url, amqpExchange: exchange, eventSocket: { probeTimeoutMs: 300 } })
  t.teardown(() => example.close())
  // At 300 ms a first probe may lose to a pause of the loaded machine: it is ready once a probe comes back.
  await waitFor(async () => (await get(example.healthPort, '/health/ready')).status === 200, { what: '/health/ready to answer 200 at first' })
  t.pass('ready at first')
  proxy.stall('consumer', true)
  const ready = await get(example.healthPort, '/health/ready')
  t.equal(ready.status, 503, 'not ready while the consumer is stalled')
  t.match(ready.body?.reason, /did not come back within 300 ms/)
  t.equal((await get(example.healthPort, '/health/live')).status, 200, 'alive all the same')
  proxy.stall('consumer', false)
  let last: unknown
  await waitFor(async () => { const ready = await get(example.healthPort, '/health/ready'); last = ready.body; return ready.status === 200 }, {
    what: '/health/ready to answer 200 again', detail: () => JSON.stringify(last)
  })
  t.pass('ready again once deliveries flow')
})

t.test('in process: /metrics on the health port serves the Prometheus text, and a published order moves it', async (t) => {
  const example = await buildExample({ port: 0, healthPort: 0, jwtSecret: SECRET })
  t.teardown(() => example.close())
  const metrics = async (): Promise<{ type: string | null, scrape: Scrape }> => {
    const response = await fetch(`http://127.0.0.1:${example.healthPort}/metrics`, { signal: AbortSignal.timeout(5000) })
    t.equal(response.status, 200)
    return { type: response.headers.get('content-type'), scrape: parsePrometheus(await response.text()) }
  }
  const before = await metrics()
  t.equal(before.type, METRICS_CONTENT_TYPE, 'with prom-client\'s content type')
  t.equal(before.scrape.families.get('evsock_connections')?.type, 'gauge', 'the plugin\'s families are there')
  const order = await fetch(`${example.url}/orders`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}', signal: AbortSignal.timeout(5000) })
  t.equal(order.status, 201)
  const after = await metrics()
  t.equal(after.scrape.value('evsock_events_published_total') - before.scrape.value('evsock_events_published_total'), 1, 'the order is counted as published')
  t.equal((await fetch(`${example.url}/metrics`, { signal: AbortSignal.timeout(5000) })).status, 404, 'metrics are not on the app\'s port')
})
