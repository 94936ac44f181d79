import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import fastifyWebsocket from '@fastify/websocket'
import type { FastifyInstance } from 'fastify'
import { BadOptionError, ClosedError, MetricsDisabledError, UpgradeRequiredError } from './errors.js'
import { takeAdmission, createHandshakeHook } from './handshake.js'
import { Hub, type EventSocketHealth, type EventSocketStats } from './hub.js'
import { MemoryBus } from './bus/memory.js'
import { resolveOptions, type EventSocketOptions, type ResolvedOptions } from './options.js'
import { toBusMessage, type Publish } from './publish.js'
import { createTokenVerifier } from './tokens.js'
import { Revocations, REVOKE_KEY } from './revocations.js'
import { DeliveryProbe, type EventSocketReadiness } from './probe.js'
import { loadTracing } from './tracing.js'
import type { Bus, BusMessage } from './bus/types.js'
import { createMetrics, type Metrics } from './metrics.js'
// The module's own namespace, for the CommonJS export at the end.
import * as self from './index.js'

export interface EventSocketApi {
  stats (): EventSocketStats
  /** Liveness: synchronous and cheap, from the bus's connection state. */
  health (options?: { probe?: false }): EventSocketHealth
  /**
   * Readiness that proves delivery: publishes a probe through the bus and waits, at most
   * `probeTimeoutMs`, for it to come back to this instance; concurrent calls share one probe.
   */
  health (options: { probe: true }): Promise<EventSocketReadiness>
  /**
   * Refuses, on every instance, the tokens of user `sub` issued up to now (by `iat`) for `revocationTtlMs`,
   * and closes that user's open connections with 4001 (say, at logout or a ban). Resolves once the bus
   * has the revocation, with how many connections it closed on this instance.
   */
  revoke (sub: string): Promise<number>
  /**
   * The plugin's metrics in Prometheus text format (content type `METRICS_CONTENT_TYPE`), with the
   * `metrics` option on; rejects with `FST_EVSOCK_METRICS_DISABLED` otherwise. docs/metrics.md.
   */
  metrics (): Promise<string>
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Publishes an event to every subscriber of a matching pattern, on every instance. Resolves once the bus has it durably. */
    publish: Publish
    eventSocket: EventSocketApi
  }
}

async function eventSocket (fastify: FastifyInstance, userOptions: EventSocketOptions): Promise<void> {
  const options = resolveOptions(userOptions)

  if (!fastify.hasDecorator('jwt')) {
    if (options.jwt === undefined) throw new BadOptionError('jwt', 'pass { secret } (or register @fastify/jwt before this plugin)')
    await fastify.register(fastifyJwt, options.jwt)
  }

  // Before the bus, so that a missing prom-client fails registration before any broker connection.
  const metrics = options.metrics === undefined ? undefined : await createMetrics(options.metrics)
  try {
    await serve(fastify, options, metrics)
  } catch (err) {
    // Out of an app's registry again, so that a retry can register there: the onClose hook that would was never added.
    metrics?.close()
    throw err
  }
}

/** Everything of the registration from the bus on. */
async function serve (fastify: FastifyInstance, options: ResolvedOptions, metrics: Metrics | undefined): Promise<void> {
  const bus = await createBus(fastify, options)
  const revocations = new Revocations(options.revocationTtlMs)
  const verify = createTokenVerifier(fastify, revocations)
  const hub = new Hub(options, fastify.log, bus, verify, revocations, metrics)
  metrics?.watch(hub)
  const tracing = options.tracing ? await loadTracing(bus.kind, fastify.log) : undefined
  // Metrics time the bus's confirm; tracing wraps that in the PRODUCER span.
  const sendToBus = (message: BusMessage): Promise<void> => metrics?.timedPublish(bus, message) ?? bus.publish(message)

  if (fastify.hasDecorator('websocketServer')) {
    // The app registered @fastify/websocket itself; its own preClose runs first.
    fastify.addHook('preClose', async () => { await hub.shutdown() })
  } else {
    await fastify.register(fastifyWebsocket, {
      options: {
        maxPayload: options.maxMessageBytes,
        // Without no-context-takeover ws ignores the threshold, and every
        // connection keeps a zlib context (~200 KB) even while idle.
        perMessageDeflate: options.compression
          ? { threshold: 1024, serverNoContextTakeover: true, clientNoContextTakeover: true }
          : false
      },
      preClose (done) {
        hub.shutdown().then(() => done(), done)
      }
    })
  }

  const probe = new DeliveryProbe({ bus, log: fastify.log, timeoutMs: options.probeTimeoutMs, health: () => hub.health(), stopping: () => hub.shuttingDown })
  try {
    await bus.start(tracing?.traced(hub.deliver, hub.streams.flushes) ?? hub.deliver)
    // Bound for the life of the instance (the amqp bus binds them again after a reconnect).
    await bus.bind(REVOKE_KEY)
    hub.controls.set(probe.key, probe.received)
    await bus.bind(probe.key)
  } catch (err) {
    // No onClose hook will close the bus: whatever it opened (a half-started one
    // too: the plugin starts and closes it) would keep the process alive.
    await bus.close()
    throw err
  }

  fastify.route({
    method: 'GET',
    url: options.path,
    onRequest: createHandshakeHook(fastify, { options, connectionCount: () => hub.connectionCount, verify }),
    handler: async () => { throw new UpgradeRequiredError() },
    ...metrics?.routeHooks,
    wsHandler: (socket, request) => {
      const admission = takeAdmission(request)
      // The onRequest hook admitted every request that reaches this handler.
      if (admission === undefined) throw new Error('event socket upgraded without an admission')
      hub.accept(socket, request, admission)
    }
  })

  fastify.decorate('publish', async function publish (topic, data, publishOptions) {
    const message = toBusMessage(topic, data, publishOptions, options)
    // Once shutdown has begun an event could resolve here yet reach none of
    // this instance's sockets (they are closing): refuse it, so the caller can retry elsewhere.
    if (hub.shuttingDown) throw new ClosedError()
    await (tracing?.publish(message, sendToBus) ?? sendToBus(message))
    hub.published()
    return { id: message.id }
  } satisfies Publish)

  fastify.decorate('eventSocket', {
    stats: () => hub.stats(),
    health: ((healthOptions?: { probe?: boolean }) => healthOptions?.probe === true ? probe.check() : hub.health()) as EventSocketApi['health'],
    revoke: async (sub) => await hub.revoke(sub),
    metrics: async () => { if (metrics === undefined) throw new MetricsDisabledError(); return await metrics.text() }
  } satisfies EventSocketApi)

  fastify.addHook('onClose', async () => {
    await hub.shutdown()
    await bus.close()
    metrics?.close()
  })
}

async function createBus (fastify: FastifyInstance, options: ResolvedOptions): Promise<Bus> {
  if (options.bus !== undefined) {
    fastify.log.info({ kind: options.bus.kind }, 'event socket: using the bus passed in the options')
    return options.bus
  }
  if (options.broker.url === undefined) {
    fastify.log.info('event socket: no broker url, using the in-process bus (one instance only)')
    return new MemoryBus(fastify.log, options.history)
  }
  // Loaded only when a broker is configured, so the in-process default never loads amqplib.
  const { createAmqpBus } = await import('./bus/amqp.js')
  return createAmqpBus(options.broker, fastify.log, options.history)
}

const plugin = fp(eventSocket, { fastify: '5.x', name: 'fastify-event-socket' })
export default plugin
export { eventSocket }
export * from './errors.js'
export { defaultAuthorize } from './options.js'
export type { Authorize, BrokerOptions, EventSocketOptions, EventSocketUser, HistoryOptions, QueueType } from './options.js'
export type { MetricsOptions, MetricsRegistry } from './metrics-options.js'
export { METRICS_CONTENT_TYPE } from './metrics.js'
export type { EventSocketHealth, EventSocketStats } from './hub.js'
export type { EventSocketReadiness } from './probe.js'
export type { Publish, PublishOptions, PublishResult } from './publish.js'
export type { Bus, BusHealth, BusHistory, BusMessage, BusState, Deliver, HistoryCursor, SkippedMessage, TraceContext } from './bus/types.js'

// require('fastify-event-socket') (Node 20.19+ loads this ES module) returns
// this export rather than the namespace: the plugin itself, as CommonJS
// Fastify plugins export theirs, so app.register(require(...)) works. fp has
// set plugin.default; the named exports are copied on from this module's own
// namespace (complete once the body has run), so that destructuring a
// require keeps working as exports are added.
for (const [name, value] of Object.entries(self)) {
  if (name !== 'default' && name !== 'module.exports' && !(name in plugin)) Object.defineProperty(plugin, name, { value, enumerable: true })
}
export { plugin as 'module.exports' }
