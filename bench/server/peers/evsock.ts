// This plugin, configured for measurement: the limits that protect a
// production server from abusive clients (handshake rate per address, frame
// rate, heartbeat) are lifted, because every bench client comes from
// 127.0.0.1 and acks at full speed; the data path is the shipped one.
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify from 'fastify'
import { Registry } from 'prom-client'
import eventSocket from '../../../lib/index.js'
import type { BrokerOptions } from '../../../lib/options.js'
import { AMQP_URL, BENCH_EXCHANGE, CLUSTER_URLS, SECRET } from '../../lib/config.js'
import { FanoutTimer } from '../fanout-timer.js'
import type { Peer, PeerOptions } from '../peer.js'

/** Publishes awaiting the bus (RabbitMQ confirms) before the driver waits. */
const MAX_IN_FLIGHT = 2000

/**
 * The plugin's own fan-out time: its `evsock_delivery_seconds` histogram
 * (bus receipt to the end of the turn's socket writes), each observation
 * taken as it is made, at full resolution rather than in Prometheus buckets.
 */
function timeDeliveries (registry: Registry): FanoutTimer {
  const delivery = registry.getSingleMetric('evsock_delivery_seconds') as { observe: (seconds: unknown) => void } | undefined
  if (delivery === undefined) throw new Error('the plugin registered no evsock_delivery_seconds histogram')
  const timer = new FanoutTimer()
  // The plugin observes plain seconds, unlabelled.
  delivery.observe = (seconds) => { timer.record(Number(seconds) * 1000) }
  return timer
}

/**
 * The single node; or on the cluster, the node of this instance (instance i
 * on node i) with a quorum instance queue, what a list of the nodes gives by
 * default. Not the list itself: an instance given it starts at a random
 * node, and the two instances would share one a third of the time.
 */
function brokerOf (options: PeerOptions): BrokerOptions {
  const exchange = options.exchange ?? BENCH_EXCHANGE
  if (options.cluster !== true) return { url: AMQP_URL, exchange }
  return { url: CLUSTER_URLS[options.instance % CLUSTER_URLS.length]!, exchange, queueType: 'quorum' }
}

export async function start (options: PeerOptions): Promise<Peer> {
  const app = Fastify()
  const window = options.window ?? 64
  const registry = options.timeFanout === true ? new Registry() : undefined
  await app.register(eventSocket, {
    jwt: { secret: SECRET },
    broker: options.shared === true ? brokerOf(options) : {},
    window,
    compression: options.compression === true,
    maxConnections: 50_000,
    handshakesPerMinute: 0,
    rateLimit: 1_000_000,
    rateBurst: 1_000_000,
    heartbeatMs: 3_600_000,
    ...(options.maxPending === undefined ? {} : { maxPendingEvents: options.maxPending }),
    ...(options.history === undefined ? {} : { history: options.history }),
    ...(registry === undefined ? {} : { metrics: { registry } })
  })
  const fanout = registry === undefined ? undefined : timeDeliveries(registry)
  const address = await app.listen({ port: 0, host: '127.0.0.1' })

  let inFlight = 0
  let failed = 0
  let sent = 0
  const settled = (): void => { inFlight-- }
  // Past a quarter of the default pending bound per connection (events behind full windows) the driver waits.
  const backlogged = (): boolean => {
    const { connections, pending } = app.eventSocket.stats()
    return pending > connections * 256
  }

  return {
    port: Number(new URL(address).port),
    publish: (topic, data) => {
      inFlight++
      sent++
      app.publish(topic, data).then(settled, () => { settled(); failed++ })
    },
    ...(fanout === undefined ? {} : { fanout }),
    busy: () => inFlight > MAX_IN_FLIGHT || backlogged(),
    inTransit: () => sent - app.eventSocket.stats().eventsIn,
    stats: () => {
      const { eventsIn, eventsOut, pending, slowConsumerCloses } = app.eventSocket.stats()
      return { consumed: eventsIn, eventsOut, pending, slowConsumerCloses, failed }
    },
    settled: async () => {
      // The publishes' promises settle it; here it is only read.
      for (let left = inFlight; left > 0; left = inFlight) await sleep(5)
    },
    close: () => app.close()
  }
}
