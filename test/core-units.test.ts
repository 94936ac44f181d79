import t from 'tap'
import { setImmediate as turn } from 'node:timers/promises'
import pino from 'pino'
import { WebSocket } from 'ws'
import { CloseCode } from '../lib/client/close-codes.js'
import { OutboundEvent } from '../lib/codec.js'
import { FlushQueue } from '../lib/flush-queue.js'
import { InboundGuard } from '../lib/inbound-guard.js'
import { KeyedLimiter, TokenBucket } from '../lib/limiter.js'
import { OutboundStream, type StreamFault } from '../lib/outbound.js'
import { Subscriptions } from '../lib/subscriptions.js'
import type { Bus, BusHealth } from '../lib/bus/types.js'

// The core's parts on their own: the limiter, the inbound guard, the outbound
// stream's window and pending queue, the subscription owner's counting and
// bind ordering. The suite's socket tests cover them composed.

t.test('a token bucket admits a burst, refills at its rate, and takes refunds up to the burst', async (t) => {
  const bucket = new TokenBucket(10, 3, 0)
  t.same([bucket.take(0), bucket.take(0), bucket.take(0), bucket.take(0)], [true, true, true, false], 'a burst of 3')
  t.equal(bucket.take(99), false, 'less than one token refilled after 99 ms at 10/s')
  t.equal(bucket.take(100), true, 'one token after 100 ms')
  bucket.refund()
  t.equal(bucket.take(100), true, 'the refund is taken')
  for (let i = 0; i < 10; i++) bucket.refund()
  t.same([bucket.take(100), bucket.take(100), bucket.take(100), bucket.take(100)], [true, true, true, false], 'refunds never exceed the burst')
})

t.test('a keyed limiter counts each key apart and forgets keys idle for a refill period', async (t) => {
  const limiter = new KeyedLimiter(2 / 60, 2) // 2 a minute
  t.same([limiter.take('a', 0), limiter.take('a', 0), limiter.take('a', 0)], [true, true, false])
  t.equal(limiter.take('b', 0), true, 'another key has its own bucket')
  t.equal(limiter.take('a', 30_000), true, 'one token back after half a minute')
  t.equal(limiter.take('c', 130_000), true)
  t.equal(limiter.size, 1, 'idle keys are gone after two periods')
})

const limits = { rateLimit: 0.001, rateBurst: 2, maxMessageBytes: 10, maxBadFrames: 3, badFrameWindowMs: 1000 }

t.test('the inbound guard closes on rate, size and bad frames, and an ack gives its token back', async (t) => {
  const breaches: Array<[number, string]> = []
  const guard = new InboundGuard(limits, { close: (code, reason) => { breaches.push([code, reason]) } })
  t.same(guard.admit(Buffer.from('12345')), Buffer.from('12345'))
  t.same(guard.admit([Buffer.from('ab'), Buffer.from('cd')]), Buffer.from('abcd'), 'fragments are joined')
  guard.ackMoved()
  t.ok(guard.admit(Buffer.from('x')) !== undefined, 'the refunded token admits one more')
  t.equal(guard.admit(Buffer.from('x')), undefined, 'past the burst')
  t.same(breaches, [[CloseCode.RateLimited, 'rate limit exceeded']])

  const sized = new InboundGuard(limits, { close: (code, reason) => { breaches.push([code, reason]) } })
  t.equal(sized.admit(Buffer.alloc(11)), undefined)
  t.same(breaches.at(-1), [CloseCode.TooBig, 'frame too large'])

  const bad = new InboundGuard(limits, { close: (code, reason) => { breaches.push([code, reason]) } })
  const count = breaches.length
  bad.badFrame(0)
  bad.badFrame(500)
  bad.badFrame(1500) // a new window: the count starts again
  t.equal(breaches.length, count, 'below the limit within each window')
  bad.badFrame(1600)
  bad.badFrame(1700)
  t.same(breaches.at(-1), [CloseCode.TooManyBadFrames, 'too many bad frames'])
})

/** A socket as the stream sees it: send records payloads (no `_socket`, so the ws.send framer is chosen). */
function fakeSocket (): { socket: WebSocket, sent: Buffer[] } {
  const sent: Buffer[] = []
  const socket = { extensions: 'permessage-deflate', readyState: WebSocket.OPEN, bufferedAmount: 0, send: (data: Buffer) => { sent.push(data) } }
  return { socket: socket as unknown as WebSocket, sent }
}

const event = (n: number): OutboundEvent => new OutboundEvent({ id: `e${n}`, topic: 't.x', time: 0, payload: Buffer.from(String(n)) })

t.test('the outbound stream sends within the window, queues behind it, and drains on ack', async (t) => {
  const { socket, sent } = fakeSocket()
  const faults: StreamFault[] = []
  let eventsOut = 0
  const host = { flushes: new FlushQueue(), sent: (n: number) => { eventsOut += n }, slowConsumer: () => {} }
  const stream = new OutboundStream(socket, 'json', { window: 2, maxPendingEvents: 2, maxPendingBytes: 1000, maxBufferedBytes: 1000 }, host, { faulted: (fault) => { faults.push(fault) } })
  stream.control({ op: 'hello' })
  for (let n = 1; n <= 4; n++) stream.push(event(n))
  t.equal(stream.pendingCount, 2, 'two behind a window of two')
  await turn()
  t.same(sent.map((payload) => JSON.parse(payload.toString())), [
    { op: 'hello' },
    { op: 'event', seq: 1, topic: 't.x', id: 'e1', data: 1 },
    { op: 'event', seq: 2, topic: 't.x', id: 'e2', data: 2 }
  ], 'payloads without WebSocket headers, in order')
  t.equal(eventsOut, 2)
  t.equal(stream.ack(3), 'unsent')
  t.equal(stream.ack(1), 'moved')
  t.equal(stream.ack(1), 'stale')
  t.equal(stream.pendingCount, 1, 'one drained')
  stream.push(event(5))
  stream.push(event(6))
  t.same(faults, [{ slow: 'pending queue overflowed' }], 'a third event behind the window overflows')
})

t.test('a stream whose flush throws is reported, and the other streams are flushed', async (t) => {
  const flushes = new FlushQueue()
  const order: string[] = []
  const failing = { flush: () => { throw new Error('boom') }, flushFailed: (err: unknown) => order.push(`failed: ${(err as Error).message}`) }
  const fine = { flush: () => order.push('flushed'), flushFailed: () => order.push('wrong') }
  flushes.schedule(failing)
  flushes.schedule(fine)
  await turn()
  t.same(order, ['failed: boom', 'flushed'])
})

/** A bus that records bind and unbind calls and resolves them when told. */
function recordingBus (): { bus: Bus, calls: string[], settle: () => void } {
  const calls: string[] = []
  let waiting: Array<() => void> = []
  const call = (what: string): Promise<void> => {
    calls.push(what)
    return new Promise((resolve) => waiting.push(resolve))
  }
  const bus: Bus = {
    kind: 'memory',
    start: async () => {},
    publish: async () => {},
    bind: async (pattern) => { await call(`bind ${pattern}`) },
    unbind: async (pattern) => { await call(`unbind ${pattern}`) },
    health: () => ({ kind: 'memory', state: 'up', buffered: 0, unconfirmed: 0 }) satisfies BusHealth,
    close: async () => {}
  }
  const settle = (): void => { for (const resolve of waiting.splice(0)) resolve(); waiting = [] }
  return { bus, calls, settle }
}

t.test('subscriptions: removeAll drops every pattern of its subscriber, counts and index alike, and unbinds those it held last', async (t) => {
  const { bus, calls, settle } = recordingBus()
  const owner = new Subscriptions<string>(bus, pino({ level: 'silent' }))
  const patterns = Array.from({ length: 50 }, (_, i) => `p${i}.*`)
  const adds = [...patterns.map((pattern) => owner.add('a', pattern)), owner.add('b', 'p0.*')]
  await turn()
  settle()
  await Promise.all(adds)
  t.equal(owner.count, 51)
  owner.removeAll('a')
  owner.removeAll('a')
  await turn()
  t.equal(owner.count, 1, 'only b\'s subscription left, and a second removeAll changes nothing')
  t.equal(owner.countOf('a'), 0)
  t.equal(owner.has('b', 'p0.*'), true)
  t.equal(owner.patternCount, 1)
  t.same(calls.filter((call) => call.startsWith('unbind')).sort(), patterns.slice(1).map((pattern) => `unbind ${pattern}`).sort(), 'every pattern a held alone is unbound, p0.* stays for b')
  const visited: string[] = []
  owner.match('p3.x', (holder) => visited.push(holder))
  owner.match('p0.x', (holder) => visited.push(holder))
  t.same(visited, ['b'])
})

t.test('subscriptions: one bind per pattern, counted per holder, unbound by its last holder, in order', async (t) => {
  const { bus, calls, settle } = recordingBus()
  const owner = new Subscriptions<string>(bus, pino({ level: 'silent' }))
  let secondReady = false
  const first = owner.add('a', 'x.*')
  const second = owner.add('b', 'x.*').then(() => { secondReady = true })
  await turn()
  t.same(calls, ['bind x.*'], 'bound once')
  t.equal(owner.count, 2)
  t.equal(owner.patternCount, 1)
  t.equal(secondReady, false, 'a second holder waits for the first bind')
  settle()
  await Promise.all([first, second])
  const visited: string[] = []
  owner.match('x.y', (holder) => visited.push(holder))
  t.same(visited.sort(), ['a', 'b'])

  t.equal(owner.remove('a', 'x.*'), true)
  t.equal(owner.remove('a', 'x.*'), false, 'not held twice')
  t.same(calls, ['bind x.*'], 'still held by b')
  owner.removeAll('b')
  await turn()
  t.same(calls, ['bind x.*', 'unbind x.*'], 'the last holder unbinds')
  const again = owner.add('c', 'x.*')
  await turn()
  t.same(calls, ['bind x.*', 'unbind x.*'], 'the bind waits for the unbind before it')
  settle()
  await turn()
  t.same(calls, ['bind x.*', 'unbind x.*', 'bind x.*'])
  settle()
  await again
  t.same([owner.count, owner.patternCount, owner.countOf('c'), owner.patternsOf('c')], [1, 1, 1, ['x.*']])
})

t.test('subscriptions: a failed bind leaves the subscription unheld and the pattern unbound', async (t) => {
  const calls: string[] = []
  const bus = {
    bind: async (pattern: string) => { calls.push(`bind ${pattern}`); throw Object.assign(new Error('down'), { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' }) },
    unbind: async (pattern: string) => { calls.push(`unbind ${pattern}`) }
  } as unknown as Bus
  const owner = new Subscriptions<string>(bus, pino({ level: 'silent' }))
  await t.rejects(owner.add('a', 'y.#'), { code: 'FST_EVSOCK_BROKER_UNAVAILABLE' })
  t.same([owner.count, owner.patternCount, owner.has('a', 'y.#')], [0, 0, false])
  await turn()
  t.same(calls, ['bind y.#', 'unbind y.#'])
})
