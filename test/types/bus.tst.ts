import { describe, expect, test } from 'tstyche'
import type { Bus, BusHealth, BusMessage, Deliver } from 'fastify-event-socket'

// Bus and BusMessage are exported for those who write their own bus: this one
// must keep compiling against the interface, or the file fails.
class RecordingBus implements Bus {
  readonly kind = 'memory'
  readonly published: BusMessage[] = []
  #deliver: ((message: BusMessage) => void) | undefined

  async start (deliver: (message: BusMessage) => void): Promise<void> { this.#deliver = deliver }
  async publish (message: BusMessage): Promise<void> { this.published.push(message); this.#deliver?.(message) }
  async bind (): Promise<void> {}
  async unbind (): Promise<void> {}
  health (): BusHealth { return { kind: 'memory', state: 'up', buffered: 0, unconfirmed: 0 } }
  async close (): Promise<void> {}
}

describe('Bus', () => {
  test('a user implementation fits it', () => {
    expect<RecordingBus>().type.toBeAssignableTo<Bus>()
  })

  test('has the documented methods', () => {
    expect<Bus['kind']>().type.toBe<'memory' | 'amqp'>()
    expect<Bus['start']>().type.toBe<(deliver: Deliver) => Promise<void>>()
    expect<(message: BusMessage) => void>().type.toBeAssignableTo<Deliver>()
    expect<Bus['publish']>().type.toBe<(message: BusMessage) => Promise<void>>()
    expect<Bus['bind']>().type.toBe<(pattern: string) => Promise<void>>()
    expect<Bus['unbind']>().type.toBe<(pattern: string) => Promise<void>>()
    expect<Bus['health']>().type.toBe<() => BusHealth>()
    expect<Bus['close']>().type.toBe<() => Promise<void>>()
  })

  test('an implementation missing a method or with another kind does not fit', () => {
    expect<Omit<RecordingBus, 'close'>>().type.not.toBeAssignableTo<Bus>()
    expect<Omit<RecordingBus, 'unbind'>>().type.not.toBeAssignableTo<Bus>()
    expect<Omit<RecordingBus, 'kind'> & { kind: 'redis' }>().type.not.toBeAssignableTo<Bus>()
    expect<Omit<RecordingBus, 'publish'> & { publish: (message: BusMessage) => void }>().type.not.toBeAssignableTo<Bus>()
  })
})

describe('BusMessage and BusHealth', () => {
  test('BusMessage carries the id, concrete topic, time and encoded payload', () => {
    expect<BusMessage>().type.toBe<{ id: string, topic: string, time: number, payload: Buffer }>()
  })

  test('BusHealth reports the kind, state and the publishes in flight', () => {
    expect<BusHealth>().type.toBe<{
      kind: 'memory' | 'amqp'
      state: 'up' | 'connecting' | 'down' | 'closed'
      buffered: number
      unconfirmed: number
      blocked?: boolean
      lastError?: string
    }>()
  })
})
