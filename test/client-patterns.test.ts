import t from 'tap'
import { compilePattern } from '../lib/client/patterns.js'

// AMQP topic-exchange semantics, docs/protocol.md section 3.
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
  const words = (word: string, count: number): string => Array.from({ length: count }, () => word).join('.')
  const topic = words('a', 60)
  // The plain case: as many `*`, which cannot backtrack, on the same topic.
  const plainMatch = compilePattern(words('*', 30) + '.z')
  const hashMatch = compilePattern(words('#', 30) + '.z')
  t.equal(hashMatch(topic), false)
  // The best of five rounds of 200 runs: the first rounds warm the JIT up, and a loaded machine slows some.
  const best = (match: (topic: string) => boolean): number => {
    let fastest = Infinity
    for (let round = 0; round < 5; round++) {
      const started = performance.now()
      for (let i = 0; i < 200; i++) match(topic)
      fastest = Math.min(fastest, performance.now() - started)
    }
    return fastest
  }
  const plain = best(plainMatch)
  const hashes = best(hashMatch)
  // The same O(pattern × topic) work; backtracking would be many orders of magnitude slower.
  t.ok(hashes < 50 * plain, `30 # took ${hashes.toFixed(2)} ms, 30 * ${plain.toFixed(2)} ms (best of 5 × 200 runs)`)
})
