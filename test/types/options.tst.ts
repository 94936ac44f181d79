import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify'
import { Registry } from 'prom-client'
import { describe, expect, test } from 'tstyche'
import eventSocket, {
  defaultAuthorize,
  eventSocket as namedEventSocket,
  type Authorize,
  type BrokerOptions,
  type EventSocketOptions,
  type EventSocketUser,
  type MetricsOptions,
  type MetricsRegistry
} from 'fastify-event-socket'

// Options as users pass them: through `app.register`, whose typing infers the
// options from the plugin, and as a plain `EventSocketOptions` value. Each case
// is one line; add new options (say, maxPatternWildcards) the same way.
declare const app: FastifyInstance

describe('the plugin', () => {
  test('is an async Fastify plugin taking EventSocketOptions, as default and named export', () => {
    expect(eventSocket).type.toBeAssignableTo<FastifyPluginAsync<EventSocketOptions>>()
    expect(namedEventSocket).type.toBeAssignableTo<FastifyPluginAsync<EventSocketOptions>>()
  })

  test('registers without options and with valid ones', () => {
    expect(app.register).type.toBeCallableWith(eventSocket)
    expect(app.register).type.toBeCallableWith(eventSocket, {})
    expect(app.register).type.toBeCallableWith(eventSocket, { jwt: { secret: 'dev secret' } })
    expect(app.register).type.toBeCallableWith(eventSocket, { path: '/ws', prefix: '/api', logLevel: 'warn' })
    expect(app.register).type.toBeCallableWith(eventSocket, { jwt: { secret: 's' }, broker: { url: 'amqp://127.0.0.1', prefetch: 32 } })
  })

  test('refuses options of the wrong type or with unknown keys', () => {
    expect(app.register).type.not.toBeCallableWith(eventSocket, { path: 1 })
    expect(app.register).type.not.toBeCallableWith(eventSocket, { window: '64' })
    expect(app.register).type.not.toBeCallableWith(eventSocket, { broker: 'amqp://127.0.0.1' })
    expect(app.register).type.not.toBeCallableWith(eventSocket, { maxConection: 10 })
    expect(app.register).type.not.toBeCallableWith(eventSocket, { path: '/ws', windw: 64 })
    expect(app.register).type.not.toBeCallableWith(eventSocket, { history: { maxAge: 1 } })
  })
})

describe('EventSocketOptions', () => {
  test('accepts every documented option with its type', () => {
    expect<EventSocketOptions>().type.toBeAssignableFrom({ path: '/events' })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ jwt: { secret: 'dev secret', sign: { expiresIn: '15m' } } })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ jwt: { secret: { public: 'pem', private: 'pem' } } })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ broker: {} })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ broker: { url: 'amqp://guest:guest@127.0.0.1:5672', exchange: 'e', queuePrefix: 'q' } })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ broker: { prefetch: 1, maxQueueLength: 1, publishTimeoutMs: 1, maxBufferedPublishes: 1 } })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ broker: { reconnectInitialDelayMs: 1, reconnectMaxDelayMs: 1 } })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ broker: { url: ['amqp://rabbit-1', 'amqp://rabbit-2'] as const, queueType: 'quorum' as const } })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ broker: { queueType: 'stream' as const } })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ broker: { url: [1, 2] } })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ authorize: defaultAuthorize })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ allowQueryToken: true })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ origins: ['https://example.com'] })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ origins: (origin: string | undefined) => origin === undefined })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ allowMissingOrigin: false })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ maxConnections: 1, window: 1, maxPendingEvents: 1, maxPendingBytes: 1, maxBufferedBytes: 1 })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ maxEventBytes: 1, maxMessageBytes: 1, heartbeatMs: 1, expiryNoticeMs: 1 })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ maxSubscriptions: 1, rateLimit: 1, rateBurst: 1, maxBadFrames: 1, badFrameWindowMs: 1 })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ revocationTtlMs: 86_400_000 })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ maxPatternWildcards: 0, maxEventDepth: 64 })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ maxPatternWildcards: '1' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ revocationTtlMs: '1d' })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ probeTimeoutMs: 2000 })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ probeTimeoutMs: '2s' })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ history: true })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ history: { maxAgeMs: 3_600_000, maxBytes: 1, maxReplays: 4 } })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ history: 'on' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ history: { maxAgeMs: '1h' } })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ handshakesPerMinute: 0 })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ compression: true })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ tracing: false })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ metrics: true })
    expect<EventSocketOptions>().type.toBeAssignableFrom({ metrics: { registry: new Registry() } })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ metrics: 'on' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ metrics: { registry: {} } })
  })

  test('a prom-client Registry is a MetricsRegistry, the type of metrics.registry', () => {
    expect<Registry>().type.toBeAssignableTo<MetricsRegistry>()
    expect<MetricsOptions>().type.toBe<{ registry?: MetricsRegistry }>()
  })

  test('refuses wrong types', () => {
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ path: 1 })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ jwt: 'dev secret' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ broker: { url: new URL('amqp://127.0.0.1') } })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ broker: { prefetch: '32' } })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ authorize: true })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ authorize: (user: EventSocketUser) => user.sub })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ allowQueryToken: 'yes' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ origins: 'https://example.com' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ origins: (origin: string) => origin.length > 0 })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ window: '64' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ heartbeatMs: null })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ compression: 1 })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ tracing: 'off' })
  })

  test('refuses unknown keys, at the top level and in broker', () => {
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ paht: '/events' })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ path: '/events', maxConection: 10 })
    expect<EventSocketOptions>().type.not.toBeAssignableFrom({ broker: { url: 'amqp://127.0.0.1', exhange: 'e' } })
  })
})

describe('authorization', () => {
  test('Authorize receives the user, the pattern and the request, and may answer asynchronously', () => {
    expect<Parameters<Authorize>>().type.toBe<[user: EventSocketUser, pattern: string, request: FastifyRequest]>()
    expect<ReturnType<Authorize>>().type.toBe<boolean | Promise<boolean>>()
    expect(defaultAuthorize).type.toBe<Authorize>()
    expect<Authorize>().type.toBeAssignableFrom(async (user: EventSocketUser, pattern: string) => user.role === 'admin' || pattern.startsWith('public.'))
  })

  test('EventSocketUser carries sub, the role claims and any other claim', () => {
    expect<EventSocketUser['sub']>().type.toBe<string>()
    expect<EventSocketUser['role']>().type.toBe<string | undefined>()
    expect<EventSocketUser['roles']>().type.toBe<string[] | undefined>()
    expect<EventSocketUser['exp']>().type.toBe<number | undefined>()
    expect<EventSocketUser['tenant']>().type.toBe<unknown>()
    expect<EventSocketUser>().type.not.toBeAssignableFrom({ role: 'admin' })
  })

  test('BrokerOptions is exported as the type of the broker option', () => {
    expect<BrokerOptions>().type.toBe<NonNullable<EventSocketOptions['broker']>>()
  })
})
