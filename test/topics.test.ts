import t from 'tap'
import fc from 'fast-check'
import { compilePattern } from '../lib/client/patterns.js'
import { referenceMatch } from './fixtures/topic-cases.js'
import { canonicalPattern, multiWordWildcards, patternProblem, topicProblem } from '../lib/topics.js'
import { TopicIndex } from '../lib/client/topic-index.js'
import { gc } from './helpers/gc.js'

t.test('topic syntax', async (t) => {
  for (const topic of ['orders', 'orders.eu.created', 'user.42.inbox', 'a-b_c:d@e.F9']) t.equal(topicProblem(topic), undefined, topic)
  for (const topic of ['', 'orders..created', '.orders', 'orders.', 'orders.*', 'orders.#', 'or ders', 'orders.é', 'x'.repeat(256), 42]) {
    t.type(topicProblem(topic), 'string', `refuses ${String(topic).slice(0, 20)}`)
  }
  t.equal(topicProblem('x'.repeat(255)), undefined, '255 bytes is allowed')
})

t.test('pattern syntax allows * and # only as whole words', async (t) => {
  for (const pattern of ['orders.*', 'orders.#', '#', '*', '*.created', 'a.#.b']) t.equal(patternProblem(pattern), undefined, pattern)
  for (const pattern of ['orders.*x', 'orders.#x', 'ord*', '', 'a..b']) t.type(patternProblem(pattern), 'string', pattern)
})

// Which topics each pattern matches: the table of test/fixtures/topic-cases.ts,
// run by test/topic-cases.test.ts against every matcher and RabbitMQ.

t.test('a subscriber matched by several patterns is visited once', async (t) => {
  const index = new TopicIndex<object>()
  const one = {}
  for (const pattern of ['orders.*', 'orders.#', '#', '#.#', 'orders.created']) index.add(pattern, one)
  let visits = 0
  index.match('orders.created', () => visits++)
  t.equal(visits, 1)
})

t.test('add and remove report the first and last subscriber of a pattern, and prune the trie', async (t) => {
  const index = new TopicIndex<object>()
  const a = {}
  const b = {}
  t.equal(index.add('x.*.y', a), true)
  t.equal(index.add('x.*.y', b), false)
  t.equal(index.patternCount, 1)
  t.equal(index.remove('x.*.y', a), false)
  t.equal(index.remove('x.*.y', a), false, 'removing twice is a no-op')
  t.equal(index.remove('x.*.y', b), true)
  t.equal(index.patternCount, 0)
  t.equal(index.remove('never.added', a), false)
  let visits = 0
  index.match('x.q.y', () => visits++)
  t.equal(visits, 0)
})

t.test('a subscriber stays reachable through its other patterns, and the index lets it go with its last', async (t) => {
  const index = new TopicIndex<object>()
  let subscriber: object | undefined = {}
  const gone = new WeakRef(subscriber)
  const visits = (topic: string): number => {
    let count = 0
    index.match(topic, () => count++)
    return count
  }
  index.add('a.*', subscriber)
  index.add('a.#', subscriber)
  index.remove('a.*', subscriber)
  t.equal(visits('a.b'), 1, 'still held through a.#')
  index.add('a.*', subscriber)
  t.equal(visits('a.b'), 1, 'visited once through both')
  index.remove('a.*', subscriber)
  index.remove('a.#', subscriber)
  t.equal(visits('a.b'), 0)
  subscriber = undefined
  // The index's own record of the subscriber must go with its last pattern.
  for (let i = 0; i < 10 && gone.deref() !== undefined; i++) {
    await new Promise((resolve) => setImmediate(resolve))
    gc()
  }
  t.equal(gone.deref(), undefined, 'collected once it holds no pattern')
})

t.test('multiWordWildcards counts the # words, which canonical form reduces to one per run', async (t) => {
  t.equal(multiWordWildcards('a.#.*.#'), 2)
  t.equal(multiWordWildcards(canonicalPattern('a.#.*.#')), 1)
})

const word = fc.constantFrom('a', 'b', 'c')
const patternWords = fc.array(fc.oneof(word, fc.constantFrom('*', '#'), fc.constantFrom('*', '#')), { minLength: 1, maxLength: 10 })
const topicWords = fc.array(word, { minLength: 1, maxLength: 10 })

t.test('canonicalPattern is idempotent and keeps the pattern valid (property)', async () => {
  fc.assert(fc.property(patternWords, (words) => {
    const canonical = canonicalPattern(words.join('.'))
    return canonicalPattern(canonical) === canonical && patternProblem(canonical) === undefined
  }), { numRuns: 2000 })
})

/** Whether the index, holding only `pattern`, matches `topic`. */
function indexMatches (pattern: string, topic: string): boolean {
  const index = new TopicIndex<object>()
  index.add(pattern, {})
  return index.matches(topic)
}

t.test('the index and the client matcher agree with a backtracking reference, spelled and canonical (property)', async () => {
  fc.assert(fc.property(patternWords, topicWords, (words, topicList) => {
    const pattern = words.join('.')
    const topic = topicList.join('.')
    const expected = referenceMatch(pattern, topic)
    const canonical = canonicalPattern(pattern)
    return [pattern, canonical].every((form) => compilePattern(form)(topic) === expected && indexMatches(form, topic) === expected)
  }), { numRuns: 3000 })
})

t.test('the index visits each matching subscriber once across many overlapping wildcard patterns (property)', async () => {
  fc.assert(fc.property(fc.array(patternWords, { minLength: 1, maxLength: 12 }), topicWords, (patterns, topicList) => {
    const topic = topicList.join('.')
    const index = new TopicIndex<{ hits: number, patterns: string[] }>()
    const a = { hits: 0, patterns: [] as string[] }
    const b = { hits: 0, patterns: [] as string[] }
    patterns.forEach((words, i) => {
      const holder = i % 2 === 0 ? a : b
      holder.patterns.push(words.join('.'))
      index.add(words.join('.'), holder)
    })
    index.match(topic, (holder) => holder.hits++)
    return [a, b].every((holder) => holder.hits === (holder.patterns.some((p) => referenceMatch(p, topic)) ? 1 : 0))
  }), { numRuns: 2000 })
})

/** Best time of one match of `topic` against `index`, in ms, over batches of `repeat` matches. */
function perMatch (index: TopicIndex<object>, topic: string, repeat: number): number {
  let best = Infinity
  for (let round = 0; round < 5 && (round === 0 || best < 50); round++) {
    const began = performance.now()
    for (let i = 0; i < repeat; i++) index.match(topic, () => {})
    best = Math.min(best, (performance.now() - began) / repeat)
  }
  return best
}

t.test('matching stays polynomial with many # in a pattern: cost against a plain pattern on the same topic', async (t) => {
  // The longest topic: 128 one-letter words, 255 bytes.
  const topic = Array.from({ length: 128 }, () => 'a').join('.')
  const plain = new TopicIndex<object>()
  plain.add('a.#', {})
  const plainMs = perMatch(plain, topic, 2000)
  const run = (n: number, unit: string): string => Array.from({ length: n }, () => unit).join('.')
  // Shapes added raw (not canonical): the index must hold up even when given
  // them. Sized so that the old backtracking walk took 0.1 to 1 s per match
  // rather than forever (one more # multiplies it by about the topic's
  // length); the shapes after the first failure are not run.
  const shapes = [
    `a.${run(4, '#')}.z`,
    run(4, '#.a'),
    `${run(4, '#.*')}.z`,
    run(4, '*.#.a')
  ]
  for (const pattern of shapes) {
    const index = new TopicIndex<object>()
    index.add(pattern, {})
    const ms = perMatch(index, topic, 1)
    if (!t.ok(ms < Math.max(plainMs, 0.001) * 200, `${pattern}: ${ms.toFixed(3)} ms per match, plain a.#: ${plainMs.toFixed(4)} ms`)) break
  }
})
