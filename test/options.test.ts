import t from 'tap'
import Fastify from 'fastify'
import eventSocket, { type EventSocketOptions } from '../lib/index.js'
import { SECRET } from './helpers/server.js'

async function register (options: Record<string, unknown>): Promise<void> {
  const app = Fastify({ logger: false })
  try {
    await app.register(eventSocket, { jwt: { secret: SECRET }, ...options } as EventSocketOptions)
    await app.ready()
  } finally {
    await app.close()
  }
}

t.test('an unknown option key fails register with FST_EVSOCK_BAD_OPTION naming it', async (t) => {
  await t.rejects(register({ windw: 8 }), { code: 'FST_EVSOCK_BAD_OPTION', message: /windw/ })
  await t.rejects(register({ maxconnections: 5, path: '/x' }), { code: 'FST_EVSOCK_BAD_OPTION', message: /maxconnections/ })
  // Present but undefined is still a misspelling.
  await t.rejects(register({ heartbeat: undefined }), { code: 'FST_EVSOCK_BAD_OPTION', message: /heartbeat/ })
})

t.test('an unknown key inside broker fails with its full name', async (t) => {
  await t.rejects(register({ broker: { prefetchCount: 10 } }), { code: 'FST_EVSOCK_BAD_OPTION', message: /broker\.prefetchCount/ })
})

t.test('every documented option, and Fastify\'s own register options, are accepted', async (t) => {
  await t.resolves(register({
    path: '/events',
    broker: { exchange: 'x', queuePrefix: 'q', prefetch: 1, maxQueueLength: 1, reconnectInitialDelayMs: 1, reconnectMaxDelayMs: 1, publishTimeoutMs: 1, maxBufferedPublishes: 1 },
    authorize: () => true,
    allowQueryToken: false,
    origins: ['https://a.example'],
    allowMissingOrigin: true,
    maxConnections: 1,
    window: 1,
    maxPendingEvents: 1,
    maxPendingBytes: 1,
    maxBufferedBytes: 1,
    maxEventBytes: 1,
    maxMessageBytes: 1,
    heartbeatMs: 1000,
    expiryNoticeMs: 0,
    maxSubscriptions: 1,
    rateLimit: 1,
    rateBurst: 1,
    maxBadFrames: 1,
    badFrameWindowMs: 1,
    handshakesPerMinute: 0,
    compression: false,
    // @fastify/autoload passes prefix; Fastify reads these three itself.
    prefix: '/ignored',
    logLevel: 'info',
    logSerializers: {}
  }))
  // The jwt options belong to @fastify/jwt: not checked here.
  await t.resolves(register({ jwt: { secret: SECRET, sign: { expiresIn: '1h' }, someFutureJwtOption: true } }))
})
