import type { FastifyInstance } from 'fastify'
import { describe, expect, test } from 'tstyche'
import type {
  BusHealth,
  EventSocketHealth,
  EventSocketReadiness,
  EventSocketStats,
  Publish,
  PublishOptions,
  PublishResult
} from 'fastify-event-socket'

// Importing the package is what adds `publish` and `eventSocket` to every
// FastifyInstance (module augmentation); these assert what a user sees there.
declare const app: FastifyInstance

describe('app.publish', () => {
  test('is the exported Publish type, resolving to the event id', () => {
    expect(app.publish).type.toBe<Publish>()
    expect(app.publish('orders.created', { id: 1 })).type.toBe<Promise<PublishResult>>()
    expect<PublishResult>().type.toBe<{ id: string }>()
    expect<PublishOptions>().type.toBe<{ id?: string }>()
  })

  test('takes a topic, any data and optional options', () => {
    expect(app.publish).type.toBeCallableWith('orders.created', { id: 1, total: 9.5 })
    expect(app.publish).type.toBeCallableWith('orders.created', 'text')
    expect(app.publish).type.toBeCallableWith('orders.created', null, {})
    expect(app.publish).type.toBeCallableWith('orders.created', [1, 2], { id: 'order-1-created' })
    expect(app.publish).type.toBeCallableWith('orders.created', undefined, undefined)
  })

  test('refuses a missing or non-string topic, and bad options', () => {
    expect(app.publish).type.not.toBeCallableWith()
    expect(app.publish).type.not.toBeCallableWith('orders.created')
    expect(app.publish).type.not.toBeCallableWith(42, {})
    expect(app.publish).type.not.toBeCallableWith(['orders', 'created'], {})
    expect(app.publish).type.not.toBeCallableWith('orders.created', {}, { id: 1 })
    expect(app.publish).type.not.toBeCallableWith('orders.created', {}, { idd: 'x' })
    expect(app.publish).type.not.toBeCallableWith('orders.created', {}, 'order-1-created')
  })
})

describe('app.eventSocket', () => {
  test('stats() returns the documented counters', () => {
    expect(app.eventSocket.stats()).type.toBe<EventSocketStats>()
    expect<EventSocketStats>().type.toBe<{
      connections: number
      subscriptions: number
      patterns: number
      eventsPublished: number
      eventsIn: number
      eventsOut: number
      pending: number
      slowConsumerCloses: number
      eventsDropped: number
      replays?: { reading: number, waiting: number }
      broker: BusHealth
    }>()
    expect(app.eventSocket.stats).type.not.toBeCallableWith('connections')
  })

  test('health() returns the status, connections and broker health', () => {
    expect(app.eventSocket.health()).type.toBe<EventSocketHealth>()
    expect<EventSocketHealth>().type.toBe<{ status: 'ok' | 'degraded' | 'down', connections: number, broker: BusHealth }>()
    expect(app.eventSocket.health({ probe: false })).type.toBe<EventSocketHealth>()
  })

  test('health({ probe: true }) resolves with the readiness: ok or down, the reason, the round trip', () => {
    expect(app.eventSocket.health({ probe: true })).type.toBe<Promise<EventSocketReadiness>>()
    expect<EventSocketReadiness>().type.toBe<{ status: 'ok' | 'down', reason?: string, probeMs?: number, connections: number, broker: BusHealth }>()
    expect(app.eventSocket.health).type.not.toBeCallableWith({ probe: 'yes' })
  })

  // revoke resolves once the bus confirmed the revocation, with the count of
  // connections it closed on this instance.
  test('revoke() takes a user id', () => {
    expect(app.eventSocket.revoke).type.toBeCallableWith('user-42')
    expect(app.eventSocket.revoke('user-42')).type.toBe<Promise<number>>()
    expect(app.eventSocket.revoke).type.not.toBeCallableWith()
    expect(app.eventSocket.revoke).type.not.toBeCallableWith(42)
    expect(app.eventSocket.revoke).type.not.toBeCallableWith({ sub: 'user-42' })
  })

  test('metrics() resolves with the Prometheus text', () => {
    expect(app.eventSocket.metrics()).type.toBe<Promise<string>>()
    expect(app.eventSocket.metrics).type.not.toBeCallableWith('evsock_connections')
  })
})
