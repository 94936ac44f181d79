import t from 'tap'
import { compilePattern } from '../lib/client/patterns.js'

// AMQP topic-exchange semantics, PROTOCOL.md section 3.
const cases: Array<[pattern: string, topic: string, expected: boolean]> = [
  ['orders.created', 'orders.created', true],
  ['orders.created', 'orders.updated', false],
  ['orders.*', 'orders.created', true],
  ['orders.*', 'orders.eu.created', false],
  ['orders.*', 'orders', false],
  ['orders.#', 'orders.created', true],
  ['orders.#', 'orders.eu.created', true],
  ['orders.#', 'orders', true],
  ['orders.#', 'ordersx.created', false],
  ['#', 'a', true],
  ['#', 'a.b.c', true],
  ['*', 'a', true],
  ['*', 'a.b', false],
  ['*.*', 'a.b', true],
  ['#.created', 'created', true],
  ['#.created', 'orders.eu.created', true],
  ['#.created', 'orders.eu.updated', false],
  ['user.*.notifications', 'user.42.notifications', true],
  ['user.*.notifications', 'user.42.inbox', false],
  ['a.#.b.#.c', 'a.b.c', true],
  ['a.#.b.#.c', 'a.x.b.y.z.c', true],
  ['a.#.b.#.c', 'a.x.c', false],
  ['#.#', 'a', true],
  ['*.#', 'a', true],
  ['*.#', 'a.b.c', true],
  ['#.*', 'a.b', true],
  ['a.*.#', 'a', false],
  ['a.#.*', 'a.b', true]
]

t.test('matches AMQP topic semantics', async (t) => {
  for (const [pattern, topic, expected] of cases) t.equal(compilePattern(pattern)(topic), expected, `${pattern} vs ${topic}`)
})

t.test('many # stay fast (no exponential backtracking)', async (t) => {
  const pattern = Array.from({ length: 30 }, () => '#').join('.') + '.z'
  const topic = Array.from({ length: 60 }, () => 'a').join('.')
  const started = performance.now()
  t.equal(compilePattern(pattern)(topic), false)
  t.ok(performance.now() - started < 200)
})
