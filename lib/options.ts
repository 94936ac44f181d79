import type { FastifyRequest } from 'fastify'
import type { FastifyJWTOptions } from '@fastify/jwt'
import { BadOptionError } from './errors.js'
import { defaultEventLimits } from './publish.js'
import { isTopicWord } from './topics.js'
import { resolveMetrics, type MetricsOptions, type ResolvedMetricsOptions } from './metrics-options.js'
import type { Bus } from './bus/types.js'
import { redact, vhostOf } from './bus/amqp-session.js'

/** The verified identity of a connection: the JWT's claims. */
export interface EventSocketUser {
  /** The user id (the JWT's `sub`). */
  sub: string
  /** A single role, when the token carries `role`. */
  role?: string
  /** Several roles, when the token carries `roles`. */
  roles?: string[]
  /** Expiry, epoch seconds. */
  exp?: number
  [claim: string]: unknown
}

/** Decides whether `user` may subscribe to `pattern`. May be async; a throw counts as a refusal. */
export type Authorize = (user: EventSocketUser, pattern: string, request: FastifyRequest) => boolean | Promise<boolean>

export interface BrokerOptions {
  /**
   * amqp:// URL of RabbitMQ, or the URLs of a cluster's nodes (one vhost): each instance starts at a node of its own
   * and fails over to the next when its node goes. Without it the in-process bus is used (one instance only).
   */
  url?: string | readonly string[]
  /**
   * Type of the instance queue. 'quorum' replicates it across a cluster's nodes, so that an event confirmed to its
   * publisher survives the death of any one node on its way to an instance. Default 'quorum' when `url` lists more
   * than one node, else 'classic' (docs/rabbitmq.md, "Running on a cluster").
   */
  queueType?: QueueType
  /** Durable topic exchange shared by every instance. Default 'evsock.events'. */
  exchange?: string
  /** Prefix of each instance's queue name. The queue is durable, not exclusive, so that it outlives a dropped connection; x-expires removes it after its instance is gone. Default 'evsock.instance'. */
  queuePrefix?: string
  /** Unacknowledged deliveries one instance holds at most. Default 256. */
  prefetch?: number
  /** Guard on the instance queue's length (x-max-length, overflow drop-head): a stalled instance loses its oldest events instead of filling the broker. Default 100000. */
  maxQueueLength?: number
  /** First reconnect delay, ms; doubles per attempt (with a node list, per pass over it). Default 100. */
  reconnectInitialDelayMs?: number
  /** Largest reconnect delay, ms. Default 5000. */
  reconnectMaxDelayMs?: number
  /** How long a publish may wait for the broker's confirm (including time buffered during an outage), ms; also how long a `sub` waits for its binding before UNAVAILABLE, and how long startup waits for the first connection (at most 8 s). Default 10000. */
  publishTimeoutMs?: number
  /** Publishes buffered while the broker is unreachable; past it `publish` rejects. Default 10000. */
  maxBufferedPublishes?: number
}

/** Retention of the event history (docs/protocol.md section 6). */
export interface HistoryOptions {
  /** How long an event stays replayable, ms. Default 86400000 (24 h). */
  maxAgeMs?: number
  /** Bytes of events kept; the oldest go first. Default 1 GiB on RabbitMQ (the stream), 64 MiB on the in-process bus (memory). */
  maxBytes?: number
  /** Replays one instance runs at once; more resuming clients wait their turn, live events first. Default 16. */
  maxReplays?: number
}

export type ResolvedHistoryOptions = Required<HistoryOptions>

export interface EventSocketOptions {
  /** Route of the WebSocket endpoint. Default '/events'. */
  path?: string
  /** Registers @fastify/jwt with these options when the app has not registered it. */
  jwt?: FastifyJWTOptions
  /** RabbitMQ settings; omit `url` for the in-process bus. */
  broker?: BrokerOptions
  /** Your own bus (any object implementing `Bus`; see docs/architecture.md, "Writing a bus"), instead of `broker`. The plugin starts and closes it. */
  bus?: Bus
  /** Authorization of each subscription. Default: `user.<sub>` and patterns under it for their own user, everything for role `admin`. */
  authorize?: Authorize
  /** Accept the token from the `access_token` query parameter. Default false (query strings end up in logs). */
  allowQueryToken?: boolean
  /** Allowed `Origin` values; when set, other origins (and a missing Origin, unless `allowMissingOrigin`) get 403. Default: no check. */
  origins?: string[] | ((origin: string | undefined) => boolean)
  /** With `origins` set, still accept handshakes with no Origin header (non-browser clients). Default true. */
  allowMissingOrigin?: boolean
  /** Open connections this instance accepts; past it the handshake gets 503. Default 10000. */
  maxConnections?: number
  /** Events in flight (sent, unacknowledged) per connection. Default 64. */
  window?: number
  /** Events waiting behind a full window per connection; past it the connection is closed with 4008. Default 1024. */
  maxPendingEvents?: number
  /** Bytes waiting behind a full window per connection; past it the connection is closed with 4008. Default 4 MiB. */
  maxPendingBytes?: number
  /** Bytes buffered in the socket (written, not yet taken by the kernel) before the connection is closed with 4008. Default 8 MiB. */
  maxBufferedBytes?: number
  /** Largest encoded event `publish` accepts, bytes. Default 204800 (200 KB). */
  maxEventBytes?: number
  /** Deepest nesting of arrays and objects in an event's data that `publish` accepts (and that a broker message may have). Default 64, at most 1000. */
  maxEventDepth?: number
  /** Largest inbound frame, bytes; a larger one closes with 1009. Default 16384. */
  maxMessageBytes?: number
  /** Interval of WebSocket pings; a connection that missed the previous pong is terminated. Default 30000. */
  heartbeatMs?: number
  /** How long before `exp` the `expiring` message is sent, ms. Default 30000. */
  expiryNoticeMs?: number
  /** Patterns one connection may hold. Default 100. */
  maxSubscriptions?: number
  /** `#` words one subscribed pattern may hold, after canonicalisation (`#.#` counts one); more gets BAD_TOPIC. Each `#` multiplies RabbitMQ's matching cost. Default 1. */
  maxPatternWildcards?: number
  /** Inbound frames per second per connection (sustained). Default 50. */
  rateLimit?: number
  /** Inbound frames allowed in a burst above the rate. Default 100. */
  rateBurst?: number
  /** Bad frames within `badFrameWindowMs` before the connection is closed with 4002. Default 10. */
  maxBadFrames?: number
  /** Window over which bad frames are counted, ms. Default 60000. */
  badFrameWindowMs?: number
  /** Handshakes per minute per remote address; past it 429. 0 turns the limit off. Default 120. */
  handshakesPerMinute?: number
  /** permessage-deflate for clients that offer it (only for frames over 1 KB). Default false. */
  compression?: boolean
  /** How long every instance remembers a `revoke(sub)`, ms; must be at least your longest token lifetime. Default 86400000 (24 h). */
  revocationTtlMs?: number
  /** How long `health({ probe: true })` waits for its probe to go through the bus and come back, ms. Default 2000. */
  probeTimeoutMs?: number
  /** Keep published events, give each a `pos`, and let clients resume with `since` (docs/protocol.md section 6). `true` for the defaults. Default false. */
  history?: boolean | HistoryOptions
  /** Carry the trace context of `publish` to the delivering instances, and trace deliveries, when the app has @opentelemetry/api installed (README, "Tracing"). Default true. */
  tracing?: boolean
  /** Prometheus metrics with prom-client (docs/metrics.md): `true`, or `{ registry }` for the app's own registry. Default false. */
  metrics?: boolean | MetricsOptions
}

export type QueueType = 'classic' | 'quorum'

export interface ResolvedBrokerOptions extends Required<Omit<BrokerOptions, 'url'>> {
  url: string | readonly string[] | undefined
}

export interface ResolvedOptions extends Required<Omit<EventSocketOptions, 'jwt' | 'broker' | 'bus' | 'origins' | 'history' | 'metrics'>> {
  jwt: FastifyJWTOptions | undefined
  /** Undefined when history is off. */
  history: ResolvedHistoryOptions | undefined
  /** Undefined when metrics are off. */
  metrics: ResolvedMetricsOptions | undefined
  broker: ResolvedBrokerOptions
  bus: Bus | undefined
  origins: ((origin: string | undefined) => boolean) | undefined
}

/**
 * The default authorization: a user may subscribe under `user.<own sub>`; an
 * admin everywhere. Everything else is refused. A `sub` that is not a single
 * topic word (say `42.inbox`) would let one user's prefix reach into
 * another's, so such a user gets no topic of its own.
 */
export const defaultAuthorize: Authorize = (user, pattern) => {
  if (user.role === 'admin' || user.roles?.includes('admin') === true) return true
  if (!isTopicWord(user.sub)) return false
  const own = `user.${user.sub}`
  return pattern === own || pattern.startsWith(`${own}.`)
}

export const brokerDefaults: Readonly<ResolvedBrokerOptions> = {
  url: undefined,
  queueType: 'classic',
  exchange: 'evsock.events',
  queuePrefix: 'evsock.instance',
  prefetch: 256,
  maxQueueLength: 100_000,
  reconnectInitialDelayMs: 100,
  reconnectMaxDelayMs: 5000,
  publishTimeoutMs: 10_000,
  maxBufferedPublishes: 10_000
}

// Fastify reads these from every register call's options (@fastify/autoload
// sets prefix): they are not ours to refuse.
const fastifyRegisterOptions = ['prefix', 'logLevel', 'logSerializers']

const MAX_EVENT_DEPTH = 1000

const positiveIntegers = [
  'maxConnections', 'window', 'maxPendingEvents', 'maxPendingBytes', 'maxBufferedBytes', 'maxEventBytes', 'maxEventDepth',
  'maxMessageBytes', 'heartbeatMs', 'maxSubscriptions', 'rateLimit', 'rateBurst', 'maxBadFrames', 'badFrameWindowMs',
  'revocationTtlMs', 'probeTimeoutMs'
] as const

export function resolveOptions (options: EventSocketOptions): ResolvedOptions {
  const resolved: ResolvedOptions = {
    path: options.path ?? '/events',
    jwt: options.jwt,
    broker: resolveBroker(options.broker),
    bus: options.bus,
    authorize: options.authorize ?? defaultAuthorize,
    allowQueryToken: options.allowQueryToken ?? false,
    origins: originCheck(options.origins),
    allowMissingOrigin: options.allowMissingOrigin ?? true,
    maxConnections: options.maxConnections ?? 10_000,
    window: options.window ?? 64,
    maxPendingEvents: options.maxPendingEvents ?? 1024,
    maxPendingBytes: options.maxPendingBytes ?? 4 * 1024 * 1024,
    maxBufferedBytes: options.maxBufferedBytes ?? 8 * 1024 * 1024,
    maxEventBytes: options.maxEventBytes ?? defaultEventLimits.maxEventBytes,
    maxEventDepth: options.maxEventDepth ?? defaultEventLimits.maxEventDepth,
    maxMessageBytes: options.maxMessageBytes ?? 16 * 1024,
    heartbeatMs: options.heartbeatMs ?? 30_000,
    expiryNoticeMs: options.expiryNoticeMs ?? 30_000,
    maxSubscriptions: options.maxSubscriptions ?? 100,
    maxPatternWildcards: options.maxPatternWildcards ?? 1,
    rateLimit: options.rateLimit ?? 50,
    rateBurst: options.rateBurst ?? 100,
    maxBadFrames: options.maxBadFrames ?? 10,
    badFrameWindowMs: options.badFrameWindowMs ?? 60_000,
    handshakesPerMinute: options.handshakesPerMinute ?? 120,
    compression: options.compression ?? false,
    revocationTtlMs: options.revocationTtlMs ?? 24 * 60 * 60 * 1000,
    probeTimeoutMs: options.probeTimeoutMs ?? 2000,
    history: resolveHistory(options),
    tracing: options.tracing ?? true,
    metrics: resolveMetrics(options.metrics)
  }
  // The known keys are those resolved (or defaulted), so an option added
  // there is known here without another list to keep in step.
  rejectUnknownKeys(options, [...Object.keys(resolved), ...fastifyRegisterOptions])
  rejectUnknownKeys(options.broker, Object.keys(brokerDefaults), 'broker.')
  if (typeof resolved.path !== 'string' || !resolved.path.startsWith('/')) {
    throw new BadOptionError('path', 'must be a string starting with "/"')
  }
  if (typeof resolved.authorize !== 'function') throw new BadOptionError('authorize', 'must be a function')
  if (typeof resolved.tracing !== 'boolean') throw new BadOptionError('tracing', 'must be true or false')
  for (const name of positiveIntegers) {
    const value = resolved[name]
    if (!Number.isSafeInteger(value) || value < 1) throw new BadOptionError(name, `must be a positive integer, got ${String(value)}`)
  }
  for (const name of ['expiryNoticeMs', 'handshakesPerMinute', 'maxPatternWildcards'] as const) {
    const value = resolved[name]
    if (!Number.isSafeInteger(value) || value < 0) throw new BadOptionError(name, `must be a non-negative integer, got ${String(value)}`)
  }
  // msgpackr encodes by recursion and overflows the stack at about 1,200 levels (less when called deep in a stack).
  if (resolved.maxEventDepth > MAX_EVENT_DEPTH) throw new BadOptionError('maxEventDepth', `must be at most ${MAX_EVENT_DEPTH}, got ${resolved.maxEventDepth}`)
  const broker = resolved.broker
  checkNodeUrls(broker.url)
  if (broker.queueType !== 'classic' && broker.queueType !== 'quorum') throw new BadOptionError('broker.queueType', `must be 'classic' or 'quorum', got ${String(broker.queueType)}`)
  for (const name of ['prefetch', 'maxQueueLength', 'reconnectInitialDelayMs', 'reconnectMaxDelayMs', 'publishTimeoutMs', 'maxBufferedPublishes'] as const) {
    const value = broker[name]
    if (!Number.isSafeInteger(value) || value < 1) throw new BadOptionError(`broker.${name}`, `must be a positive integer, got ${String(value)}`)
  }
  checkBus(options)
  if (resolved.history !== undefined && resolved.bus !== undefined && resolved.bus.history === undefined) {
    throw new BadOptionError('history', `needs a bus that keeps history; the ${resolved.bus.kind} bus has no history`)
  }
  return resolved
}

const MiB = 1024 * 1024

function resolveBroker (broker: BrokerOptions | undefined): ResolvedBrokerOptions {
  const url = broker?.url
  const nodes = Array.isArray(url) ? url.length : 1
  const resolved: ResolvedBrokerOptions = { ...brokerDefaults, queueType: nodes > 1 ? 'quorum' : 'classic', ...broker }
  // A copy: the app's array may change after register, the instance's nodes do not.
  if (Array.isArray(url)) resolved.url = Object.freeze([...url])
  return resolved
}

/** What a refused URL was, without echoing a password. */
function describeUrl (node: unknown): string {
  if (typeof node !== 'string') return typeof node
  return URL.canParse(node) ? redact(node) : 'a string that is not a URL'
}

/** One URL, or a list of a cluster's nodes that agree on the vhost (the exchange, queues and stream live in one). */
function checkNodeUrls (url: unknown): void {
  if (url === undefined) return
  const urls: unknown[] = Array.isArray(url) ? url : [url]
  if (urls.length === 0) throw new BadOptionError('broker.url', 'must list at least one node')
  for (const node of urls) {
    if (typeof node !== 'string' || !/^amqps?:\/\//.test(node) || !URL.canParse(node)) {
      throw new BadOptionError('broker.url', `must be an amqp:// or amqps:// URL${urls.length > 1 ? ' or a list of them' : ''}, got ${describeUrl(node)}`)
    }
  }
  const vhosts = new Set((urls as string[]).map(vhostOf))
  if (vhosts.size > 1) throw new BadOptionError('broker.url', `lists nodes of different vhosts (${[...vhosts].join(', ')}); a cluster's instances share one`)
}

function resolveHistory ({ history, broker }: EventSocketOptions): ResolvedHistoryOptions | undefined {
  if (history === undefined || history === false) return undefined
  if (history !== true && (typeof history !== 'object' || history === null)) {
    throw new BadOptionError('history', 'must be true, false or { maxAgeMs, maxBytes, maxReplays }')
  }
  const given: HistoryOptions = history === true ? {} : history
  rejectUnknownKeys(given, ['maxAgeMs', 'maxBytes', 'maxReplays'], 'history.')
  const resolved: ResolvedHistoryOptions = {
    maxAgeMs: given.maxAgeMs ?? 24 * 60 * 60 * 1000,
    maxBytes: given.maxBytes ?? (broker?.url === undefined ? 64 * MiB : 1024 * MiB),
    maxReplays: given.maxReplays ?? 16
  }
  for (const name of ['maxAgeMs', 'maxBytes', 'maxReplays'] as const) {
    const value = resolved[name]
    if (!Number.isSafeInteger(value) || value < 1) throw new BadOptionError(`history.${name}`, `must be a positive integer, got ${String(value)}`)
  }
  return resolved
}

const busMethods = ['start', 'publish', 'bind', 'unbind', 'health', 'close'] as const

function checkBus ({ bus, broker }: EventSocketOptions): void {
  if (bus === undefined) return
  // Two transports would silently split the instances: refuse rather than pick one.
  if (broker !== undefined) throw new BadOptionError('bus', 'cannot be combined with broker: configure your bus itself')
  if (typeof bus !== 'object' || bus === null) throw new BadOptionError('bus', 'must be an object implementing Bus')
  if (typeof bus.kind !== 'string' || bus.kind === '') throw new BadOptionError('bus', 'must have a non-empty string kind')
  for (const method of busMethods) {
    if (typeof bus[method] !== 'function') throw new BadOptionError('bus', `must have a ${method}() method`)
  }
}

/** A misspelt option would otherwise fall back to its default without a word. */
function rejectUnknownKeys (given: object | undefined, known: string[], prefix = ''): void {
  if (given === undefined || given === null) return
  for (const key of Object.keys(given)) {
    if (!known.includes(key)) throw new BadOptionError(`${prefix}${key}`, 'is not a known option')
  }
}

function originCheck (origins: EventSocketOptions['origins']): ResolvedOptions['origins'] {
  if (origins === undefined) return undefined
  if (typeof origins === 'function') return origins
  if (!Array.isArray(origins) || origins.some((origin) => typeof origin !== 'string')) {
    throw new BadOptionError('origins', 'must be an array of origin strings or a function')
  }
  const allowed = new Set(origins)
  return (origin) => origin !== undefined && allowed.has(origin)
}
