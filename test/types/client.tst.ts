import { describe, expect, test } from 'tstyche'
import { WebSocket as NodeWebSocket } from 'ws'
import {
  connect,
  EventSocketClient,
  EventSocketClientError,
  type ClientErrorCode,
  type ClientState,
  type ConnectOptions,
  type HelloMessage,
  type ReceivedEvent,
  type ResumeResult,
  type Subscription
} from 'fastify-event-socket/client'

declare const client: EventSocketClient
const url = 'wss://example.com/events'

describe('connect', () => {
  test('accepts a URL and a token or a token source', () => {
    expect(connect({ url, token: 'jwt' })).type.toBe<EventSocketClient>()
    expect(connect).type.toBeCallableWith({ url })
    expect(connect).type.toBeCallableWith({ url: new URL(url), token: 'jwt' })
    expect(connect).type.toBeCallableWith({ url, getToken: () => 'jwt' })
    expect(connect).type.toBeCallableWith({ url, getToken: async () => 'jwt' })
    expect(connect).type.toBeCallableWith({ url, token: 'jwt', getToken: async () => 'jwt' })
  })

  test('accepts the browser WebSocket and the ws package one, a format, backoff and ack delay', () => {
    expect(connect).type.toBeCallableWith({ url, WebSocket: NodeWebSocket })
    expect(connect).type.toBeCallableWith({ url, WebSocket: globalThis.WebSocket })
    expect(connect).type.toBeCallableWith({ url, format: 'json' })
    expect(connect).type.toBeCallableWith({ url, format: 'msgpack' })
    expect(connect).type.toBeCallableWith({ url, reconnect: { maxDelayMs: 10_000 } })
    expect(connect).type.toBeCallableWith({ url, reconnect: { initialDelayMs: 100, maxDelayMs: 10_000 }, ackDelayMs: 0 })
  })

  test('accepts a stored position to resume from', () => {
    expect(connect).type.toBeCallableWith({ url, since: 'pos-from-storage' })
    expect(connect).type.toBeCallableWith({ url, since: client.position })
    expect(connect).type.not.toBeCallableWith({ url, since: 42 })
  })

  test('refuses a missing url, wrong types and unknown keys', () => {
    expect(connect).type.not.toBeCallableWith()
    expect(connect).type.not.toBeCallableWith({ token: 'jwt' })
    expect(connect).type.not.toBeCallableWith(url)
    expect(connect).type.not.toBeCallableWith({ url, token: 42 })
    expect(connect).type.not.toBeCallableWith({ url, getToken: 'jwt' })
    expect(connect).type.not.toBeCallableWith({ url, getToken: async () => 42 })
    expect(connect).type.not.toBeCallableWith({ url, format: 'xml' })
    expect(connect).type.not.toBeCallableWith({ url, WebSocket: {} })
    expect(connect).type.not.toBeCallableWith({ url, reconnect: { maxDelay: 10_000 } })
    expect(connect).type.not.toBeCallableWith({ url, ackDelay: 50 })
    expect<ConnectOptions>().type.not.toBeAssignableFrom({ url, tokn: 'jwt' })
  })
})

describe('subscribe', () => {
  test('hands the handler a ReceivedEvent whose data is unknown', () => {
    client.subscribe('orders.*', (event) => {
      expect(event).type.toBe<ReceivedEvent>()
      expect(event.topic).type.toBe<string>()
      expect(event.id).type.toBe<string>()
      expect(event.data).type.toBe<unknown>()
      expect(event.pos).type.toBe<string | undefined>()
    })
  })

  test('accepts sync and async handlers, and returns a Subscription', () => {
    expect(client.subscribe('orders.#', () => {})).type.toBe<Subscription>()
    expect(client.subscribe).type.toBeCallableWith('orders.#', async (event: ReceivedEvent) => { await Promise.resolve(event.id) })
    expect(client.subscribe('orders.#', () => {})()).type.toBe<Promise<void>>()
    expect(client.subscribe('orders.#', () => {}).ready).type.toBe<Promise<void>>()
  })

  test('refuses a missing handler, a non-string pattern or a handler of another event type', () => {
    expect(client.subscribe).type.not.toBeCallableWith('orders.#')
    expect(client.subscribe).type.not.toBeCallableWith(['orders.#'], () => {})
    expect(client.subscribe).type.not.toBeCallableWith('orders.#', (event: { data: string }) => event.data)
  })
})

describe('the client', () => {
  test('exposes its state and a close that resolves once closed', () => {
    expect(client.state).type.toBe<ClientState>()
    expect<ClientState>().type.toBe<'connecting' | 'open' | 'reconnecting' | 'closed'>()
    expect(client.close()).type.toBe<Promise<void>>()
  })

  test('exposes its resume position, read-only', () => {
    expect(client.position).type.toBe<string | undefined>()
    expect<Pick<EventSocketClient, 'position'>>().type.toBe<{ readonly position: string | undefined }>()
  })

  test('emits typed events, and on() returns an unsubscribe function', () => {
    expect(client.on('error', (error) => { expect(error).type.toBe<EventSocketClientError>() })).type.toBe<() => void>()
    expect(client.on).type.toBeCallableWith('state', (state: ClientState) => state)
    expect(client.on).type.toBeCallableWith('open', (hello: HelloMessage) => hello.session)
    expect(client.on).type.toBeCallableWith('disconnect', (close: { code: number, reason: string }) => close.code)
    expect(client.on('resume', (result) => { expect(result).type.toBe<ResumeResult>() })).type.toBe<() => void>()
    expect<ResumeResult>().type.toBe<{ pattern: string, recovered: boolean }>()
    expect(client.on).type.not.toBeCallableWith('resume', (result: { pattern: string, recovered: string }) => result)
    expect(client.on).type.not.toBeCallableWith('message', () => {})
    expect(client.on).type.not.toBeCallableWith('state', (state: number) => state)
  })
})

describe('EventSocketClientError', () => {
  test('is an Error with a code to switch on and optional details', () => {
    expect<EventSocketClientError>().type.toBeAssignableTo<Error>()
    expect<EventSocketClientError['code']>().type.toBe<ClientErrorCode>()
    expect<EventSocketClientError['status']>().type.toBe<number | undefined>()
    expect<EventSocketClientError['serverCode']>().type.toBe<string | undefined>()
    expect<EventSocketClientError['pattern']>().type.toBe<string | undefined>()
    expect<EventSocketClientError['topic']>().type.toBe<string | undefined>()
  })

  // A new code breaks callers' exhaustive switches: adding one here is deliberate.
  test('has the documented codes', () => {
    expect<ClientErrorCode>().type.toBe<
      | 'EVSOCK_UNAUTHORIZED'
      | 'EVSOCK_HANDSHAKE_REFUSED'
      | 'EVSOCK_REQUEST_FAILED'
      | 'EVSOCK_SERVER_ERROR'
      | 'EVSOCK_PROTOCOL'
      | 'EVSOCK_HANDLER_FAILED'
      | 'EVSOCK_TOKEN_FAILED'
      | 'EVSOCK_CLOSED'
      | 'EVSOCK_NO_WEBSOCKET'
    >()
  })

  test('is constructed with a known code only', () => {
    expect(EventSocketClientError).type.toBeConstructableWith('EVSOCK_CLOSED', 'closed')
    expect(EventSocketClientError).type.toBeConstructableWith('EVSOCK_REQUEST_FAILED', 'refused', { serverCode: 'forbidden', pattern: 'a.#' })
    expect(EventSocketClientError).type.not.toBeConstructableWith('EVSOCK_NOPE', 'closed')
    expect(EventSocketClientError).type.not.toBeConstructableWith('EVSOCK_CLOSED')
  })
})
