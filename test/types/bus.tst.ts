import { describe, expect, test } from 'tstyche'
import type { Bus, BusHealth, BusHistory, BusMessage, Deliver, EventSocketOptions, HistoryCursor, SkippedMessage, TraceContext } from 'fastify-event-socket'
import { busContract, type BusContractOptions, type ContractTest } from 'fastify-event-socket/bus-contract'

// Bus and BusMessage are exported for those who write their own bus: this one
// must keep compiling against the interface, or the file fails.
class RecordingBus implements Bus {
  readonly kind = 'recording'
  readonly published: BusMessage[] = []
  #deliver: ((message: BusMessage) => void) | undefined

  async start (deliver: (message: BusMessage) => void): Promise<void> { this.#deliver = deliver }
  async publish (message: BusMessage): Promise<void> { this.published.push(message); this.#deliver?.(message) }
  async bind (): Promise<void> {}
  async unbind (): Promise<void> {}
  health (): BusHealth { return { kind: this.kind, state: 'up', buffered: 0, unconfirmed: 0 } }
  async close (): Promise<void> {}
}

describe('Bus', () => {
  test('a user implementation, with a kind of its own, fits it and the bus option', () => {
    expect<RecordingBus>().type.toBeAssignableTo<Bus>()
    expect<{ bus: RecordingBus }>().type.toBeAssignableTo<EventSocketOptions>()
    expect<{ bus: { kind: string } }>().type.not.toBeAssignableTo<EventSocketOptions>()
  })

  test('has the documented methods', () => {
    expect<Bus['kind']>().type.toBe<string>()
    expect<Bus['start']>().type.toBe<(deliver: Deliver) => Promise<void>>()
    expect<(message: BusMessage) => void>().type.toBeAssignableTo<Deliver>()
    expect<Bus['publish']>().type.toBe<(message: BusMessage) => Promise<void>>()
    expect<Bus['bind']>().type.toBe<(pattern: string) => Promise<void>>()
    expect<Bus['unbind']>().type.toBe<(pattern: string) => Promise<void>>()
    expect<Bus['health']>().type.toBe<() => BusHealth>()
    expect<Bus['close']>().type.toBe<() => Promise<void>>()
  })

  test('an implementation missing a method, or whose kind is not a string, does not fit', () => {
    expect<Omit<RecordingBus, 'close'>>().type.not.toBeAssignableTo<Bus>()
    expect<Omit<RecordingBus, 'unbind'>>().type.not.toBeAssignableTo<Bus>()
    expect<Omit<RecordingBus, 'kind'> & { kind: 42 }>().type.not.toBeAssignableTo<Bus>()
    expect<Omit<RecordingBus, 'publish'> & { publish: (message: BusMessage) => void }>().type.not.toBeAssignableTo<Bus>()
  })
})

describe('BusMessage.trace', () => {
  test('is optional: a message without it, as a bus written before it makes, is a BusMessage', () => {
    expect<BusMessage>().type.toBeAssignableFrom({ id: 'a', topic: 't', time: 1, payload: Buffer.alloc(0) })
    expect<TraceContext>().type.toBe<{ traceparent: string, tracestate?: string }>()
  })
})

describe('BusHistory', () => {
  test('a bus may keep a history, and need not', () => {
    expect<Bus['history']>().type.toBe<BusHistory | undefined>()
    expect<Omit<RecordingBus, 'history'>>().type.toBeAssignableTo<Bus>()
  })

  test('a history reads from an offset, formats and parses positions', () => {
    expect<BusHistory['read']>().type.toBe<(from: number) => HistoryCursor>()
    expect<BusHistory['parse']>().type.toBe<(pos: string) => number | undefined>()
    expect<BusHistory['oldest']>().type.toBe<() => Promise<number>>()
    expect<HistoryCursor['next']>().type.toBe<() => Promise<BusMessage | SkippedMessage>>()
  })

  test('a cursor hands out a message that is not an event as skipped, with its offset and why', () => {
    expect<SkippedMessage>().type.toBe<{ readonly offset: number, readonly skipped: string }>()
    expect<{ offset: number, skipped: string }>().type.toBeAssignableTo<SkippedMessage>()
    expect<{ offset: number }>().type.not.toBeAssignableTo<SkippedMessage>()
  })
})

describe('BusMessage and BusHealth', () => {
  test('BusMessage carries the id, concrete topic, time and encoded payload, its offset in a history, and the publisher\'s trace context', () => {
    expect<BusMessage>().type.toBe<{ id: string, topic: string, time: number, payload: Buffer, offset?: number, trace?: TraceContext }>()
  })

  test('BusHealth reports the kind, state and the publishes in flight', () => {
    expect<BusHealth>().type.toBe<{
      kind: string
      state: 'up' | 'connecting' | 'down' | 'closed'
      buffered: number
      unconfirmed: number
      blocked?: boolean
      reconnects?: number
      lastError?: string
    }>()
  })
})

describe('busContract', () => {
  test('takes a test function and a factory of buses', () => {
    expect(busContract).type.toBe<(test: ContractTest, options: BusContractOptions) => void>()
    expect<(name: string, fn: () => Promise<void>) => Promise<void>>().type.toBeAssignableTo<ContractTest>()
    expect<{ createBus: () => RecordingBus }>().type.toBeAssignableTo<BusContractOptions>()
    expect<{ createBus: () => Promise<Bus>, singleInstance: true, timeoutMs: 100 }>().type.toBeAssignableTo<BusContractOptions>()
    expect<{ createBus: () => { kind: string } }>().type.not.toBeAssignableTo<BusContractOptions>()
  })
})
