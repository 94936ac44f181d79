import t from 'tap'
import { compilePattern } from '../lib/client/patterns.js'
import { requireBroker } from './helpers/broker.js'
import { deliveryReport, matches, type Got } from './helpers/delivery-check.js'
import { clusterOptions, startInstance } from './helpers/instance.js'
import { defaultTopic, SENTINEL_TOPIC, type Published } from './helpers/publisher.js'
import { openClient, startServer, TestClient } from './helpers/server.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'
import { waitFor, within } from './helpers/wait.js'

// The harness of the history tests checked on its own, so that a fault test
// that passes means the feature works, not that the harness saw nothing.

const PATTERNS = ['orders.#', '*.*.paid', 'orders.*.created', 'stock.*', '#', 'orders.*']

/** Two publishers' records of `count` events each. */
function records (count: number): Published[][] {
  return [0, 1].map((p) => Array.from({ length: count }, (_, n) => ({ p, n, topic: defaultTopic(n), id: `${p}-${n}` })))
}

function gotAll (pattern: string, published: Published[][]): Got[] {
  return published.flat().filter((event) => matches(pattern, event.topic)).map(({ p, n, topic }) => ({ p, n, topic }))
}

t.test('the checker\'s matcher agrees with the library\'s on every topic the tests publish', async (t) => {
  const topics = [...new Set([...Array.from({ length: 40 }, (_, n) => defaultTopic(n)), SENTINEL_TOPIC, 'orders', 'orders.1'])]
  for (const pattern of PATTERNS) {
    const library = compilePattern(pattern)
    t.same(topics.filter((topic) => matches(pattern, topic)), topics.filter(library), pattern)
  }
})

t.test('the checker passes a complete record and names the first missing, duplicate, out-of-order and unexpected event', async (t) => {
  const published = records(30)
  const pattern = 'orders.#'
  const complete = gotAll(pattern, published)
  t.equal(deliveryReport(pattern, published, complete), '', 'every matching event once, in order: no report')

  const missing = complete.filter((event) => !(event.p === 1 && [4, 5, 8].includes(event.n)))
  t.match(deliveryReport(pattern, published, missing), /publisher 1: 26 expected, 23 received: 3 missing \(n 4-5, 8\); first missing n=4 \(orders\.2\.created\)/)

  const duplicated = [...complete.slice(0, 10), complete[3] as Got, ...complete.slice(10)]
  t.match(deliveryReport(pattern, published, duplicated), /1 duplicate\(s\); first duplicate n=\d+/)

  const swapped = [...complete]
  ;[swapped[2], swapped[4]] = [swapped[4] as Got, swapped[2] as Got]
  t.match(deliveryReport(pattern, published, swapped), /out of order: first n=\d+ after n=\d+/)

  // Event 6 is stock.x, which orders.# does not match.
  t.match(deliveryReport(pattern, published, [...complete, { p: 0, n: 6, topic: 'stock.x' }]), /1 unexpected .*first n=6 \(stock\.x\)/, 'an event the pattern does not match')
  t.match(deliveryReport(pattern, published, [...complete, { p: 2, n: 0, topic: 'orders.1.paid' }]), /publisher 2: 0 expected, 1 received: 1 unexpected/, 'an event of no known publisher')
})

t.test('the checker reports only the kinds asked for, and takes the events of rejected publishes as neither missing nor unexpected', async (t) => {
  const published = records(30)
  const pattern = 'orders.#'
  const complete = gotAll(pattern, published)
  const swapped = [...complete]
  ;[swapped[2], swapped[4]] = [swapped[4] as Got, swapped[2] as Got]
  t.equal(deliveryReport(pattern, published, swapped, { only: ['missing', 'duplicate', 'unexpected'] }), '', 'an order problem, left out')
  t.match(deliveryReport(pattern, published, swapped, { only: ['order'] }), /out of order/, 'and reported alone')

  // Publisher 0's events 4 and 5 rejected: out of its record, yet one of them was routed and arrived.
  const rejected = [4, 5].map((n) => ({ p: 0, n, topic: published[0]?.[n]?.topic as string }))
  const resolved = published.map((record, p) => record.filter((event) => p !== 0 || !rejected.some((maybe) => maybe.n === event.n)))
  const oneArrived = complete.filter((event) => !(event.p === 0 && event.n === 5))
  t.match(deliveryReport(pattern, resolved, oneArrived), /1 unexpected .*first n=4/, 'unexpected unless declared as maybe')
  t.equal(deliveryReport(pattern, resolved, oneArrived, { maybe: rejected }), '', 'a maybe that arrived and one that did not: no problem')
  t.match(deliveryReport(pattern, resolved, [...oneArrived, { p: 0, n: 4, topic: rejected[0]?.topic as string }], { maybe: rejected }), /1 duplicate\(s\); first duplicate n=4/, 'a maybe that arrived twice is a duplicate')
  t.match(deliveryReport(pattern, resolved, [...oneArrived, { p: 0, n: 6, topic: 'stock.x' }], { maybe: [...rejected, { p: 0, n: 6, topic: 'stock.x' }] }), /1 unexpected .*first n=6/, 'a maybe the pattern does not match is still unexpected')
})

t.test('the proxy carries a socket, cuts every one (the client sees 1006), and sends new ones to the new upstream', async (t) => {
  const [first, second] = await Promise.all([startServer(t), startServer(t)])
  const proxy = await startTcpProxy(t, first.port)
  const open = async (): Promise<TestClient> => await openClient(t, { ...first, url: proxy.url })
  const clients = await Promise.all([open(), open()])
  t.equal(first.app.eventSocket.stats().connections, 2, 'both clients reached the first upstream')
  t.equal((await (clients[0] as TestClient).subscribe('proxy.*')).op, 'ok', 'requests and answers pass through')

  t.equal(proxy.cutAll(), 2, 'two pairs cut')
  for (const client of clients) t.equal((await within(client.closed, { what: 'the cut client to see its close' })).code, 1006, 'the client sees an abnormal close')
  await waitFor(() => first.app.eventSocket.stats().connections === 0, { what: 'the server to see both connections gone' })

  proxy.setUpstream(second.port)
  await open()
  t.equal(second.app.eventSocket.stats().connections, 1, 'a new connection reached the second upstream')
  t.equal(first.app.eventSocket.stats().connections, 0, 'and not the first')
  t.equal(proxy.accepted, 3)
  t.equal(proxy.open, 1)
})

t.test('an instance in a child process: serves through the proxy, SIGTERM closes its clients with 1001 and it exits; SIGKILL drops them', async (t) => {
  if (!await requireBroker(t)) return
  const options = clusterOptions(t)
  const [publishing, closing, killed] = await Promise.all([startServer(t, options), startInstance(t, options), startInstance(t, options)])
  const proxy = await startTcpProxy(t, closing.port)
  const token = publishing.sign({ sub: 'reader', role: 'admin' })
  const connectThrough = async (): Promise<TestClient> => {
    const client = new TestClient(proxy.url, { token })
    t.teardown(() => client.ws.terminate())
    await client.next((message) => message.op === 'hello', { timeout: 5000 })
    t.equal((await client.subscribe('harness.*')).op, 'ok')
    return client
  }
  const toClosing = await connectThrough()
  proxy.setUpstream(killed.port)
  const toKilled = await connectThrough()
  const { id } = await publishing.app.publish('harness.one', { n: 1 })
  for (const client of [toClosing, toKilled]) await client.next((message) => message.op === 'event' && message.id === id, { timeout: 5000 })
  t.pass('both instances delivered an event published on a third')

  closing.child.signal('SIGTERM')
  t.equal((await within(toClosing.closed, { what: 'the close after SIGTERM' })).code, 1001)
  t.equal(await closing.child.exited('the instance to exit after SIGTERM', 10_000), 0, 'the instance exited by itself, cleanly')
  killed.child.signal('SIGKILL')
  t.equal((await within(toKilled.closed, { what: 'the close after SIGKILL' })).code, 1006)
  t.equal(await killed.child.exited('the killed instance to be gone', 5000), null, 'killed by the signal')
})
