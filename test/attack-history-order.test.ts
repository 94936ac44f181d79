import { test, type Test } from 'tap'
import { compilePattern } from '../lib/client/patterns.js'
import { delay, openClient, startServer, type Message, type TestClient, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'
import type { EventSocketOptions } from '../lib/index.js'

// Attacks on the exactly-once and order guarantees of history and resume
// (docs/protocol.md section 6) on the in-process bus: on one connection every
// event goes out once, in strictly increasing pos order, replayed and live
// alike, and a `sub` answered `recovered: true` misses nothing after its
// `since`. Every event carries `{ n }`, its rank in publish order, which on
// the in-process bus is the history's order: the `n`s a client receives must
// rise strictly, and hold every event it is owed.

let requestId = 1

/** Sends a `sub` or `unsub` (with a fresh id) and resolves with its answer. */
async function ask (client: TestClient, request: { op: 'sub' | 'unsub', topic: string, since?: string }): Promise<Message> {
  const id = requestId++
  const from = client.messages.length
  client.send({ ...request, id })
  return await client.next((message) => message.id === id && (message.op === 'ok' || message.op === 'error'), { from, timeout: 5000 })
}

/** The events a server publishes, ranked, and a `#` watcher that learns the pos of each. */
class Feed {
  readonly topics: string[] = []
  readonly failures: unknown[] = []
  readonly #server: TestServer
  readonly #watcher: TestClient

  private constructor (server: TestServer, watcher: TestClient) {
    this.#server = server
    this.#watcher = watcher
  }

  static async open (t: Test, options: EventSocketOptions = { history: true }): Promise<{ server: TestServer, feed: Feed }> {
    const server = await startServer(t, options)
    const watcher = await openClient(t, server, { sub: 'watcher' })
    watcher.ackEach()
    await ask(watcher, { op: 'sub', topic: '#' })
    return { server, feed: new Feed(server, watcher) }
  }

  /** Publishes at once (the in-process bus ranks it now); returns its rank. */
  publish (topic: string): number {
    const n = this.topics.length
    this.topics.push(topic)
    this.#server.app.publish(topic, { n }).catch((err: unknown) => { this.failures.push(err) })
    return n
  }

  /** The pos of event `n`, as the watcher received it. */
  async pos (n: number): Promise<string> {
    await waitFor(() => this.#watcher.events().some((event) => event.data.n === n), { what: `the watcher's event ${n}` })
    return this.#watcher.events().find((event) => event.data.n === n)?.pos as string
  }

  /** Ranks of the events after `after` matching any of `patterns`, up to `upTo` included. */
  owed (after: number, upTo: number, patterns: string[]): number[] {
    const matchers = patterns.map(compilePattern)
    const owed: number[] = []
    for (let n = after + 1; n <= upTo; n++) {
      if (matchers.some((matches) => matches(this.topics[n] as string))) owed.push(n)
    }
    return owed
  }
}

function ranks (client: TestClient): number[] {
  return client.events().map((event) => event.data.n as number)
}

/** Waits for event `n` on `client`; returns every rank it received. */
async function ranksUntil (client: TestClient, n: number): Promise<number[]> {
  await waitFor(() => ranks(client).includes(n), { what: `event ${n}`, detail: () => JSON.stringify(ranks(client)) })
  return ranks(client)
}

function rising (values: number[]): boolean {
  return values.every((value, i) => i === 0 || value > (values[i - 1] as number))
}

test('a since older than what live delivery already sent is not rewound into: the stream stays in pos order', async (t) => {
  const { server, feed } = await Feed.open(t)
  const client = await openClient(t, server)
  client.ackEach()
  await ask(client, { op: 'sub', topic: 'a.*' })
  const cSince = feed.publish('z.0')
  const c1 = feed.publish('c.1')
  const a1 = feed.publish('a.1')
  await ranksUntil(client, a1)
  const bSince = feed.publish('z.1')
  const b1 = feed.publish('b.1')
  const c2 = feed.publish('c.2')
  const [bPos, cPos] = await Promise.all([feed.pos(bSince), feed.pos(cSince)])
  // One burst: b.* starts a replay; c.* then asks for events before a.1, which already went out live.
  const bAnswer = ask(client, { op: 'sub', topic: 'b.*', since: bPos })
  const cAnswer = ask(client, { op: 'sub', topic: 'c.*', since: cPos })
  t.equal((await bAnswer).recovered, true)
  const c = await cAnswer
  const end = feed.publish('c.end')
  const got = await ranksUntil(client, end)
  t.ok(rising(got), `strictly increasing pos order on the connection: got ${JSON.stringify(got)} (c.1 is ${c1}, a.1 ${a1}, b.1 ${b1}, c.2 ${c2})`)
  t.equal(c.recovered, false, 'events after this since went out already: recovered false, as section 6 says')
  t.ok(got.includes(b1), 'b.* got its replay')
})

test('a replay never sends the plugin\'s control messages, not even to a # subscriber', async (t) => {
  const server = await startServer(t, { history: true })
  // The ok carries a pos only once the history holds an event.
  await server.app.publish('x.0', {})
  const first = await openClient(t, server)
  const ok = await ask(first, { op: 'sub', topic: '#' })
  first.ws.terminate()
  await server.app.eventSocket.revoke('someone-else')
  const { id: sentinel } = await server.app.publish('x.1', {})
  const second = await openClient(t, server)
  second.ackEach()
  t.equal((await ask(second, { op: 'sub', topic: '#', since: ok.pos })).recovered, true)
  await waitFor(() => second.events().some((event) => event.id === sentinel), { what: 'the sentinel', detail: () => JSON.stringify(second.events()) })
  t.same(second.events().map((event) => event.topic), ['x.1'], 'only the published event: a revocation is no event')
})

test('a sub whose since is the newest event misses nothing published while its subscription is put in place', async (t) => {
  // An app whose code publishes in the same turn as a sub is handled (here
  // from authorize, a few microtasks later: each pattern g.<ticks> says how
  // many) lands its event between the server's look at the history's head
  // and the moment the subscription starts to route.
  const feedOf: { feed?: Feed } = {}
  const authorize = (_user: unknown, pattern: string): boolean => {
    const [prefix, ticks] = pattern.split('.')
    if (prefix === 'g') {
      let later = Promise.resolve()
      for (let i = 0; i < Number(ticks); i++) later = later.then(() => {})
      later.then(() => { feedOf.feed?.publish(pattern) }, () => {})
    }
    return true
  }
  const { server, feed } = await Feed.open(t, { history: true, authorize })
  feedOf.feed = feed
  feed.publish('start')
  const missed: string[] = []
  for (let ticks = 0; ticks <= 12; ticks++) {
    const client = await openClient(t, server)
    client.ackEach()
    // Its pos is the newest event's: nothing is published between it and the sub with since.
    const { pos } = await ask(client, { op: 'sub', topic: `other.${ticks}` })
    const answer = await ask(client, { op: 'sub', topic: `g.${ticks}`, since: pos })
    t.equal(answer.recovered, true)
    const sentinel = feed.publish(`g.${ticks}`)
    const got = await ranksUntil(client, sentinel)
    const owed = feed.owed(feed.topics.indexOf(`g.${ticks}`) - 1, sentinel, [`g.${ticks}`])
    if (JSON.stringify(got) !== JSON.stringify(owed)) missed.push(`g.${ticks}: got ${JSON.stringify(got)}, owed ${JSON.stringify(owed)}`)
    client.ws.terminate()
  }
  t.same(missed, [], 'every event after since, whichever microtask it was published in')
  t.same(feed.failures, [])
})

/** A request of a storm: its `since` names the watcher's event `early` or `late` (ranks 10 and 30), or is absent. */
type StormStep = { op: 'sub', topic: string, since?: 'early' | 'late' } | { op: 'unsub', topic: string } | { pause: number }

const STORM_TOPICS = ['a.b', 'a.c', 'x.b', 'a.b.c', 'z.z', 'x.y']

/**
 * Publishes two events every millisecond while a client resumes with `steps`
 * (acking every event), then checks the stream it received: strictly rising,
 * everything owed (after a recovered pattern's since, or after a pattern's
 * ok), nothing that none of its patterns matched.
 */
async function storm (t: Test, window: number, steps: StormStep[]): Promise<void> {
  const { server, feed } = await Feed.open(t, { history: true, window })
  let turn = 0
  const publishTwo = (): void => {
    for (let i = 0; i < 2; i++) feed.publish(STORM_TOPICS[turn++ % STORM_TOPICS.length] as string)
  }
  const timer = setInterval(publishTwo, 1)
  t.teardown(() => clearInterval(timer))
  await waitFor(() => feed.topics.length > 40, { what: '40 events published' })
  const since = { early: { rank: 10, pos: await feed.pos(10) }, late: { rank: 30, pos: await feed.pos(30) } }
  const client = await openClient(t, server)
  client.ackEach()
  const from = new Map<string, number>()
  const everHeld = new Set<string>()
  const answers: Array<Promise<void>> = []
  for (const step of steps) {
    if ('pause' in step) {
      await delay(step.pause)
      continue
    }
    if (step.op === 'unsub') {
      answers.push(ask(client, step).then(() => { from.delete(step.topic) }))
      continue
    }
    everHeld.add(step.topic)
    const resume = step.since === undefined ? undefined : since[step.since]
    answers.push(ask(client, { op: 'sub', topic: step.topic, since: resume?.pos }).then((answer) => {
      t.equal(answer.op, 'ok', `sub ${step.topic}`)
      // A duplicate sub of a held pattern is a no-op: the pattern keeps the start it had.
      from.set(step.topic, Math.min(from.get(step.topic) ?? Infinity, answer.recovered === true ? (resume as { rank: number }).rank : feed.topics.length - 1))
    }))
  }
  await Promise.all(answers)
  await delay(100)
  clearInterval(timer)
  for (const topic of STORM_TOPICS) feed.publish(topic)
  const last = feed.topics.length - 1
  const held = [...from.keys()]
  const finalRank = feed.owed(last - STORM_TOPICS.length, last, held).at(-1) as number
  const got = await ranksUntil(client, finalRank)
  const owed = new Set(held.flatMap((pattern) => feed.owed(from.get(pattern) as number, last, [pattern])))
  const missing = [...owed].filter((n) => !got.includes(n))
  const matchesAny = held.length === 0 ? () => false : ((matchers) => (n: number) => matchers.some((matches) => matches(feed.topics[n] as string)))([...everHeld].map(compilePattern))
  t.ok(rising(got), `strictly increasing pos order (${got.length} events)${rising(got) ? '' : `: ${JSON.stringify(got)}`}`)
  t.same(missing, [], 'every event owed arrived')
  t.same(got.filter((n) => !matchesAny(n)), [], 'no event that none of its patterns matched')
  t.same(feed.failures, [])
}

test('a storm: one burst of overlapping resuming subs (a.#, *.b, a.b) while events are published every millisecond', async (t) => {
  await storm(t, 4, [{ op: 'sub', topic: 'a.#', since: 'late' }, { op: 'sub', topic: '*.b', since: 'late' }, { op: 'sub', topic: 'a.b', since: 'late' }])
})

test('a storm: resuming subs in separate frames with pauses, each with its own since, and a sub without since between', async (t) => {
  await storm(t, 4, [
    { op: 'sub', topic: 'a.#', since: 'late' }, { pause: 20 },
    { op: 'sub', topic: 'x.*' }, { pause: 20 },
    { op: 'sub', topic: '*.b', since: 'early' }, { pause: 20 },
    { op: 'sub', topic: 'a.b', since: 'late' }
  ])
})

test('a storm: a second since older than the first, in the same burst (the replay starts earlier)', async (t) => {
  await storm(t, 2, [{ op: 'sub', topic: 'a.#', since: 'late' }, { op: 'sub', topic: '*.b', since: 'early' }])
})

test('a storm: unsub and resub of the same pattern during its replay, window 1', async (t) => {
  await storm(t, 1, [
    { op: 'sub', topic: 'a.#', since: 'early' }, { op: 'sub', topic: '*.b', since: 'early' }, { pause: 10 },
    { op: 'unsub', topic: '*.b' }, { op: 'sub', topic: '*.b', since: 'late' }, { pause: 10 },
    { op: 'unsub', topic: 'a.#' }, { op: 'sub', topic: 'a.#' }
  ])
})

test('a storm: a duplicate sub of a held pattern with since, during the replay', async (t) => {
  await storm(t, 2, [{ op: 'sub', topic: 'a.#', since: 'late' }, { pause: 10 }, { op: 'sub', topic: 'a.#', since: 'early' }, { op: 'sub', topic: 'x.*', since: 'early' }])
})

test('a token refresh that ends a pattern during its replay: nothing of it after the FORBIDDEN, the other pattern in full', async (t) => {
  const { server, feed } = await Feed.open(t, { history: true, window: 1 })
  const start = feed.publish('z.start')
  for (let i = 0; i < 10; i++) feed.publish(i % 2 === 0 ? 'user.u1.x' : 'other.x')
  const since = await feed.pos(start)
  const client = await openClient(t, server, { sub: 'u1', role: 'admin' })
  client.send({ op: 'sub', id: 1, topic: 'user.u1.#', since })
  client.send({ op: 'sub', id: 2, topic: 'other.#', since })
  await waitFor(() => client.events().length === 1, { what: 'the first replayed event (window 1)' })
  // The default authorize lets a plain user have user.<sub>.# only.
  client.send({ op: 'auth', id: 3, token: server.sign({ sub: 'u1', role: 'user' }) })
  await client.next((message) => message.id === 3)
  client.ackEach()
  client.send({ op: 'ack', seq: 1 })
  feed.publish('other.end')
  const end = feed.publish('user.u1.end')
  const got = await ranksUntil(client, end)
  const forbidden = client.messages.findIndex((message) => message.op === 'error' && message.code === 'FORBIDDEN' && message.topic === 'other.#')
  t.ok(forbidden > 0, 'other.# ended with FORBIDDEN')
  const after = client.messages.slice(forbidden).filter((message) => message.op === 'event').map((event) => event.topic as string)
  t.same(after.filter((topic) => topic.startsWith('other.')), [], 'no event of other.# after its FORBIDDEN')
  t.same(got.filter((n) => feed.topics[n]?.startsWith('user.') === true), feed.owed(start, end, ['user.u1.#']), 'user.u1.# in full')
  t.ok(rising(got))
})
