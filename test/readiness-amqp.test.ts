import t from 'tap'
import type { EventSocketReadiness } from '../lib/index.js'
import { startAmqpProxy, type AmqpRole } from './helpers/amqp-proxy.js'
import { rabbitmqctl, requireBroker, withChannel } from './helpers/broker.js'
import { clusterOptions } from './helpers/instance.js'
import { startServer, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// Readiness on the real broker goes red while deliveries to this instance
// have stopped although its connections are up (the failure a plain health
// check stays green through), and back once they flow again; with history
// off (instance queue and its bindings) and on (the history stream).

const PROBE_TIMEOUT_MS = 500

async function ready (server: TestServer): Promise<EventSocketReadiness> {
  return await server.app.eventSocket.health({ probe: true })
}

/** Probes until one gives `status`: under load a first probe can lose to a pause longer than the 500 ms bound. */
async function waitForReadiness (server: TestServer, status: 'ok' | 'down', what: string): Promise<EventSocketReadiness> {
  let last: EventSocketReadiness | undefined
  await waitFor(async () => (last = await ready(server)).status === status, {
    what,
    timeoutMs: 15_000,
    intervalMs: 50,
    detail: () => JSON.stringify(last)
  })
  return last as EventSocketReadiness
}

/** The binding that carries this instance's probes: its instance queue's `$evsock.probe.` key, or, history on, the stream's `#`. */
async function probeBinding (exchange: string, history: boolean): Promise<{ queue: string, key: string }> {
  const out = await rabbitmqctl('list_bindings', 'source_name', 'destination_name', 'routing_key')
  for (const line of out.split('\n')) {
    const [source, queue, key] = line.split('\t')
    if (source !== exchange || queue === undefined || key === undefined) continue
    if (history ? key === '#' : key.startsWith('$evsock.probe.')) return { queue, key }
  }
  throw new Error(`no probe binding on ${exchange}: ${out}`)
}

for (const history of [false, true]) {
  const mode = `history ${history ? 'on' : 'off'}`

  t.test(`${mode}: a binding removed behind the bus's back turns readiness down while health() stays ok, and restoring it turns it ok`, async (t) => {
    if (!await requireBroker(t)) return
    const options = clusterOptions(t, { history, probeTimeoutMs: PROBE_TIMEOUT_MS })
    const exchange = options.broker?.exchange as string
    const server = await startServer(t, options)
    t.equal((await waitForReadiness(server, 'ok', 'readiness at first')).status, 'ok', 'ready at first')
    const binding = await probeBinding(exchange, history)
    await withChannel(options.broker?.url as string, (channel) => channel.unbindQueue(binding.queue, exchange, binding.key))
    const down = await waitForReadiness(server, 'down', 'readiness to go down without the binding')
    t.match(down.reason, /published but did not come back within 500 ms/, 'the reason says the probe was lost after the broker took it')
    t.equal(server.app.eventSocket.health().status, 'ok', 'liveness still says ok: the connections are up')
    await withChannel(options.broker?.url as string, (channel) => channel.bindQueue(binding.queue, exchange, binding.key))
    const back = await waitForReadiness(server, 'ok', 'readiness to come back with the binding')
    t.equal(typeof back.probeMs, 'number', 'ok again, with the round trip time')
  })

  const stalls: Array<[AmqpRole, RegExp, string]> = [
    ['consumer', /published but did not come back within 500 ms/, 'the probe was confirmed and never delivered'],
    ['publisher', /bus did not confirm the probe within 500 ms/, 'the broker\'s confirm never came (as under a blocked connection)']
  ]
  for (const [role, reason, why] of stalls) {
    t.test(`${mode}: a stalled ${role} connection turns readiness down while health() stays ok, and ok once it flows again`, async (t) => {
      if (!await requireBroker(t)) return
      const proxy = await startAmqpProxy(t)
      const options = clusterOptions(t, { history, probeTimeoutMs: PROBE_TIMEOUT_MS })
      const server = await startServer(t, { ...options, broker: { ...options.broker, url: proxy.url } })
      t.same(proxy.roles().sort(), ['consumer', 'publisher'], 'both of the bus\'s connections go through the proxy')
      t.equal((await waitForReadiness(server, 'ok', 'readiness at first')).status, 'ok', 'ready at first')
      proxy.stall(role, true)
      const down = await ready(server)
      t.equal(down.status, 'down', `down while the ${role} connection is stalled`)
      t.match(down.reason, reason, why)
      t.equal(server.app.eventSocket.health().status, 'ok', 'liveness still says ok: the connections are up')
      proxy.stall(role, false)
      await waitForReadiness(server, 'ok', `readiness to come back once the ${role} connection flows`)
      t.pass('ok again')
    })
  }

  t.test(`${mode}: readiness is down while the broker is unreachable, and ok after the bus reconnects`, async (t) => {
    if (!await requireBroker(t)) return
    const proxy = await startAmqpProxy(t)
    const options = clusterOptions(t, { history, probeTimeoutMs: PROBE_TIMEOUT_MS })
    const server = await startServer(t, { ...options, broker: { ...options.broker, url: proxy.url } })
    t.equal((await waitForReadiness(server, 'ok', 'readiness at first')).status, 'ok', 'ready at first')
    proxy.refuse(true)
    proxy.cutAll()
    await waitFor(() => server.app.eventSocket.health().broker.state !== 'up', { what: 'the bus to see its connections drop' })
    const down = await ready(server)
    t.equal(down.status, 'down', 'down while the broker is unreachable')
    t.match(down.reason, /^broker (down|connecting)/, 'the reason names the broker\'s state, without publishing a probe')
    proxy.refuse(false)
    await waitForReadiness(server, 'ok', 'readiness to come back after the reconnect')
    t.pass('ok again')
  })
}
