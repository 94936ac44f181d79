import pino from 'pino'
import t, { type Test } from 'tap'
import { Subscriptions } from '../lib/subscriptions.js'
import type { Bus, BusHealth } from '../lib/bus/types.js'
import { openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { seededRandom } from './helpers/seeded-random.js'
import { roundTrip, waitFor } from './helpers/wait.js'

// Red-team attack on commit 3eddd04 (lib/subscriptions.ts): a subscriber's
// patterns are the string itself while it holds one, an array up to 16, a Set
// past that. Every transition (1→2→1→0→1, a duplicate, a pattern never held,
// past 16 and back, removeAll at every size) is checked against a plain model
// of who holds what: matching, countOf, patternsOf, has, count, patternCount,
// and the bus's bind and unbind calls. Then the same through real sockets.

/** A bus that records bind and unbind calls and resolves them at once. */
function recordingBus (): { bus: Bus, calls: string[] } {
  const calls: string[] = []
  const bus: Bus = {
    kind: 'memory',
    start: async () => {},
    publish: async () => {},
    bind: async (pattern) => { calls.push(`bind ${pattern}`) },
    unbind: async (pattern) => { calls.push(`unbind ${pattern}`) },
    health: () => ({ kind: 'memory', state: 'up', buffered: 0, unconfirmed: 0 }) satisfies BusHealth,
    close: async () => {}
  }
  return { bus, calls }
}

/** AMQP topic matching, written independently of the index under test. */
function matches (pattern: string, topic: string): boolean {
  const p = pattern.split('.')
  const w = topic.split('.')
  const at = (i: number, j: number): boolean => {
    if (i === p.length) return j === w.length
    if (p[i] === '#') {
      for (let k = j; k <= w.length; k++) if (at(i + 1, k)) return true
      return false
    }
    if (j === w.length) return false
    return (p[i] === '*' || p[i] === w[j]) && at(i + 1, j + 1)
  }
  return at(0, 0)
}

const turn = async (): Promise<void> => { await new Promise((resolve) => setImmediate(resolve)) }

const SUBSCRIBERS = ['A', 'B', 'C'] as const
type Sub = typeof SUBSCRIBERS[number]
const MANY = Array.from({ length: 20 }, (_, i) => `n.${i}`)
const PATTERNS = ['a.b', 'a.*', 'a.#', '#', 'x.*.z', ...MANY]
const TOPICS = ['a.b', 'a.c', 'a', 'a.b.c', 'x.y.z', 'q', 'n.0', 'n.15', 'n.16', 'n.19']

/** The owner under test beside a model of it; `check` compares every observable after a step. */
class Harness {
  readonly calls: string[]
  readonly owner: Subscriptions<Sub>
  readonly model = new Map<Sub, string[]>(SUBSCRIBERS.map((s) => [s, []]))
  /** The bind and unbind calls the model expects, in order, pattern by pattern. */
  readonly expected: string[] = []

  constructor () {
    const { bus, calls } = recordingBus()
    this.calls = calls
    this.owner = new Subscriptions<Sub>(bus, pino({ level: 'silent' }))
  }

  holders (pattern: string): number {
    return [...this.model.values()].filter((held) => held.includes(pattern)).length
  }

  async add (s: Sub, pattern: string): Promise<void> {
    const held = this.model.get(s)!
    if (!held.includes(pattern)) {
      if (this.holders(pattern) === 0) this.expected.push(`bind ${pattern}`)
      held.push(pattern)
    }
    await this.owner.add(s, pattern)
  }

  remove (s: Sub, pattern: string): boolean {
    const held = this.model.get(s)!
    const at = held.indexOf(pattern)
    if (at !== -1) {
      held.splice(at, 1)
      if (this.holders(pattern) === 0) this.expected.push(`unbind ${pattern}`)
    }
    const removed = this.owner.remove(s, pattern)
    if (removed !== (at !== -1)) throw new Error(`remove(${s}, ${pattern}) returned ${String(removed)}, the model says ${String(at !== -1)}`)
    return removed
  }

  removeAll (s: Sub): void {
    const held = this.model.get(s)!.splice(0)
    for (const pattern of held) if (this.holders(pattern) === 0) this.expected.push(`unbind ${pattern}`)
    this.owner.removeAll(s)
  }

  /** Every observable against the model; returns the first difference, or undefined. */
  async difference (): Promise<string | undefined> {
    await turn()
    for (const s of SUBSCRIBERS) {
      const held = this.model.get(s)!
      if (this.owner.countOf(s) !== held.length) return `countOf(${s}) ${this.owner.countOf(s)}, model ${held.length}`
      const listed = this.owner.patternsOf(s)
      if (JSON.stringify([...listed].sort()) !== JSON.stringify([...held].sort())) return `patternsOf(${s}) ${JSON.stringify(listed)}, model ${JSON.stringify(held)}`
      for (const pattern of [...PATTERNS, 'never.held']) {
        if (this.owner.has(s, pattern) !== held.includes(pattern)) return `has(${s}, ${pattern}) ${String(this.owner.has(s, pattern))}`
      }
    }
    const total = [...this.model.values()].reduce((sum, held) => sum + held.length, 0)
    if (this.owner.count !== total) return `count ${this.owner.count}, model ${total}`
    const distinct = new Set([...this.model.values()].flat()).size
    if (this.owner.patternCount !== distinct) return `patternCount ${this.owner.patternCount}, model ${distinct}`
    for (const topic of TOPICS) {
      const visited: Sub[] = []
      this.owner.match(topic, (s) => visited.push(s))
      const wanted = SUBSCRIBERS.filter((s) => this.model.get(s)!.some((pattern) => matches(pattern, topic)))
      if (JSON.stringify([...visited].sort()) !== JSON.stringify(wanted)) return `match(${topic}) visited ${JSON.stringify(visited)}, model ${JSON.stringify(wanted)}`
    }
    // Per pattern, its calls in order: across patterns the order is the queue's.
    for (const pattern of PATTERNS) {
      const got = this.calls.filter((call) => call.endsWith(` ${pattern}`))
      const want = this.expected.filter((call) => call.endsWith(` ${pattern}`))
      if (JSON.stringify(got) !== JSON.stringify(want)) return `bus calls for ${pattern}: ${JSON.stringify(got)}, model ${JSON.stringify(want)}`
    }
    if (this.calls.length !== this.expected.length) return `${this.calls.length} bus calls, model ${this.expected.length}`
    return undefined
  }

  async check (t: Test, step: string): Promise<void> {
    const difference = await this.difference()
    t.equal(difference, undefined, `${step}: countOf, patternsOf, has, count, patternCount, matching and bind/unbind agree with the model`)
  }
}

t.test('one pattern, two, one, none, one again: every observable at each step', async (t) => {
  const h = new Harness()
  await h.add('A', 'a.b'); await h.check(t, 'A holds a.b (the string)')
  await h.add('A', 'a.*'); await h.check(t, 'A holds a.b and a.* (an array of two)')
  t.equal(h.remove('A', 'a.b'), true, 'a.b was held'); await h.check(t, 'A back to a.* alone')
  t.equal(h.remove('A', 'a.*'), true, 'a.* was held'); await h.check(t, 'A holds nothing')
  t.same(h.owner.patternsOf('A'), [], 'patternsOf is empty')
  await h.add('A', 'a.*'); await h.check(t, 'A holds a.* again (the string)')
  t.equal(h.remove('A', 'a.*'), true, 'removed from the string'); await h.check(t, 'A holds nothing after the string')
  t.equal(h.remove('A', 'a.*'), false, 'removed from the string twice: the second is false'); await h.check(t, 'still nothing')
  await h.add('A', 'a.b'); await h.check(t, 'A holds a.b as a new string')
  t.same(h.calls, ['bind a.b', 'bind a.*', 'unbind a.b', 'unbind a.*', 'bind a.*', 'unbind a.*', 'bind a.b'], 'the bus saw exactly these calls, in order')
})

t.test('the same pattern twice, and patterns never held, at each representation', async (t) => {
  const h = new Harness()
  t.equal(h.remove('A', 'a.b'), false, 'removing from a subscriber that holds nothing'); await h.check(t, 'nothing held')
  await h.add('A', 'a.b'); await h.add('A', 'a.b'); await h.check(t, 'a.b added twice: held once (string)')
  t.equal(h.remove('A', 'never.held'), false, 'a pattern never held, beside a string'); await h.check(t, 'still a.b')
  await h.add('A', 'a.#'); await h.add('A', 'a.b'); await h.add('A', 'a.#'); await h.check(t, 'duplicates into an array of two')
  t.equal(h.remove('A', 'never.held'), false, 'never held, beside an array'); await h.check(t, 'still two')
  for (const pattern of MANY) await h.add('A', pattern)
  await h.check(t, '22 held (a Set)')
  await h.add('A', 'n.3'); await h.add('A', 'a.b'); await h.check(t, 'duplicates into a Set')
  t.equal(h.remove('A', 'never.held'), false, 'never held, beside a Set'); await h.check(t, 'still 22')
  t.equal(h.remove('A', 'a.b'), true); t.equal(h.remove('A', 'a.b'), false, 'removed twice: the second is false')
  await h.check(t, 'a.b gone once')
  t.equal(h.calls.filter((call) => call === 'bind a.b').length, 1, 'a duplicate never bound a second time')
})

t.test('past 16 and back down to none, one at a time, with a second holder of some patterns', async (t) => {
  const h = new Harness()
  await h.add('B', 'n.0'); await h.add('B', 'n.17')
  for (const [i, pattern] of MANY.entries()) {
    await h.add('A', pattern)
    await h.check(t, `A holds ${i + 1}`)
  }
  // 16 → 17 → 16 → 17 again across the array/Set boundary, then all the way down in a scrambled order.
  t.equal(h.remove('A', 'n.5'), true); await h.check(t, 'A down to 19')
  for (const pattern of ['n.19', 'n.18', 'n.17']) h.remove('A', pattern)
  await h.check(t, 'A down to 16')
  await h.add('A', 'n.5'); await h.check(t, 'A at 17 again')
  await h.add('A', 'n.17'); await h.check(t, 'A at 18, n.17 still held by B (no bind)')
  const order = [...h.model.get('A')!].sort((x, y) => (x.length * 31 + x.charCodeAt(x.length - 1)) - (y.length * 31 + y.charCodeAt(y.length - 1)))
  for (const pattern of order) {
    h.remove('A', pattern)
    await h.check(t, `A without ${pattern} (${h.model.get('A')!.length} left)`)
  }
  t.equal(h.owner.countOf('A'), 0)
  await h.add('A', 'a.b'); await h.check(t, 'A after emptying a Set holds one pattern again')
  t.equal(h.calls.filter((call) => call === 'unbind n.0' || call === 'unbind n.17').length, 0, 'B\'s patterns were never unbound')
})

t.test('removeAll at every size: 0, 1, 2, 16, 17, 20, then the subscriber starts over', async (t) => {
  for (const size of [0, 1, 2, 16, 17, 20]) {
    const h = new Harness()
    await h.add('B', 'n.1')
    await h.add('C', '#')
    for (const pattern of MANY.slice(0, size)) await h.add('A', pattern)
    await h.check(t, `A holds ${size}`)
    h.removeAll('A'); await h.check(t, `removeAll at ${size}`)
    h.removeAll('A'); await h.check(t, `removeAll again at ${size} (nothing held)`)
    await h.add('A', 'n.1'); await h.add('A', 'a.b'); await h.check(t, `A starts over after removeAll at ${size}`)
  }
})

t.test('a seeded random walk of 3000 adds, removes and removeAlls over three subscribers agrees with the model at every step', async (t) => {
  const random = seededRandom(0x3eddd04)
  const h = new Harness()
  let first: string | undefined
  for (let step = 0; step < 3000 && first === undefined; step++) {
    const s = SUBSCRIBERS[Math.floor(random() * SUBSCRIBERS.length)]!
    const pattern = PATTERNS[Math.floor(random() * PATTERNS.length)]!
    const roll = random()
    // Adds outweigh removes, so that subscribers cross 16 both ways.
    let what: string
    if (roll < 0.6) { await h.add(s, pattern); what = `add ${s} ${pattern}` } else if (roll < 0.97) { h.remove(s, pattern); what = `remove ${s} ${pattern}` } else { h.removeAll(s); what = `removeAll ${s}` }
    const difference = await h.difference()
    if (difference !== undefined) first = `step ${step} (${what}): ${difference}`
  }
  t.equal(first, undefined, 'no step disagreed')
  t.ok(h.calls.length > 100, `the walk made ${h.calls.length} bind/unbind calls`)
})

// End to end: real clients, the memory bus.

async function expectOnly (t: Test, server: TestServer, clients: Record<string, TestClient>, topic: string, receivers: string[], tag: string): Promise<void> {
  const from = Object.fromEntries(Object.entries(clients).map(([name, client]) => [name, client.messages.length]))
  await server.app.publish(topic, { tag })
  // The sentinel, published after, on a topic every client holds: once it is in, anything for `topic` is too.
  await server.app.publish('sentinel.all', { tag })
  for (const [name, client] of Object.entries(clients)) {
    await client.next((message) => message.op === 'event' && message.topic === 'sentinel.all' && message.data?.tag === tag, { from: from[name], timeout: 5000 })
    const got = client.messages.slice(from[name]).filter((message) => message.op === 'event' && message.topic === topic && message.data?.tag === tag).length
    t.equal(got, receivers.includes(name) ? 1 : 0, `${tag}: ${name} got ${receivers.includes(name) ? 'the event once' : 'nothing'} on ${topic}`)
  }
}

async function unsub (client: TestClient, topic: string, id: number): Promise<string> {
  const from = client.messages.length
  client.send({ op: 'unsub', id, topic })
  return String((await client.next((message) => message.id === id, { from })).op)
}

t.test('end to end: sub/unsub sequences through 1→2→1→0→1 and past 16 and back, proved with sentinels', async (t) => {
  const server = await startServer(t, { maxSubscriptions: 40 })
  const a = await openClient(t, server, { sub: 'a' })
  const b = await openClient(t, server, { sub: 'b' })
  const clients = { a, b }
  for (const client of [a, b]) t.equal((await client.subscribe('sentinel.all')).op, 'ok')
  let id = 5000

  t.equal((await a.subscribe('e.one')).op, 'ok', 'a: e.one')
  t.equal((await a.subscribe('e.one')).op, 'ok', 'a: e.one again (no-op)')
  await expectOnly(t, server, clients, 'e.one', ['a'], 'dup')
  t.equal((await a.subscribe('e.*')).op, 'ok', 'a: e.* (two patterns that both match e.one)')
  await expectOnly(t, server, clients, 'e.one', ['a'], 'two-overlapping')
  t.equal(await unsub(a, 'e.one', id++), 'ok')
  await expectOnly(t, server, clients, 'e.one', ['a'], 'one-left-wildcard')
  t.equal(await unsub(a, 'e.*', id++), 'ok')
  t.equal(await unsub(a, 'e.*', id++), 'ok', 'unsub of a pattern no longer held is answered ok')
  await expectOnly(t, server, clients, 'e.one', [], 'none')
  t.equal((await b.subscribe('e.one')).op, 'ok', 'b: e.one')
  await expectOnly(t, server, clients, 'e.one', ['b'], 'b-only')

  // a past 16 and back down.
  for (let i = 0; i < 20; i++) t.equal((await a.subscribe(`m.${i}`)).op, 'ok')
  t.equal(server.app.eventSocket.stats().subscriptions, 1 + 20 + 1 + 1, 'stats count every subscription')
  await expectOnly(t, server, clients, 'm.18', ['a'], 'a-at-20')
  for (let i = 19; i >= 1; i--) t.equal(await unsub(a, `m.${i}`, id++), 'ok')
  await expectOnly(t, server, clients, 'm.18', [], 'a-back-to-one')
  await expectOnly(t, server, clients, 'm.0', ['a'], 'a-keeps-m0')
  t.equal(await unsub(a, 'm.0', id++), 'ok')
  await expectOnly(t, server, clients, 'm.0', [], 'a-none')
  await roundTrip(a)
  const stats = server.app.eventSocket.stats()
  t.equal(stats.subscriptions, 3, 'a: sentinel; b: sentinel and e.one')
  t.equal(stats.patterns, 2, 'sentinel.all and e.one bound')

  // Closing a connection that held a Set's worth removes all of it.
  for (let i = 0; i < 18; i++) t.equal((await a.subscribe(`z.${i}`)).op, 'ok')
  t.equal(server.app.eventSocket.stats().patterns, 20)
  a.close()
  await waitFor(() => server.app.eventSocket.stats().connections === 1, { what: 'a to be gone' })
  t.equal(server.app.eventSocket.stats().subscriptions, 2, 'b\'s two remain')
  t.equal(server.app.eventSocket.stats().patterns, 2, 'a\'s 18 patterns unbound')
  await expectOnly(t, server, { b }, 'e.one', ['b'], 'b-after-a-closed')
})
