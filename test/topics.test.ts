import t from 'tap'
import { patternProblem, topicProblem } from '../lib/topics.js'
import { TopicIndex } from '../lib/topic-index.js'

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

function matches (patterns: string[], topic: string): string[] {
  const index = new TopicIndex<{ matchMark: number, name: string }>()
  for (const name of patterns) index.add(name, { matchMark: 0, name })
  const seen: string[] = []
  index.match(topic, (s) => seen.push(s.name))
  return seen.sort()
}

t.test('* matches exactly one word', async (t) => {
  t.same(matches(['orders.*'], 'orders.created'), ['orders.*'])
  t.same(matches(['orders.*'], 'orders.eu.created'), [])
  t.same(matches(['orders.*'], 'orders'), [])
  t.same(matches(['*.created'], 'orders.created'), ['*.created'])
})

t.test('# matches zero or more words', async (t) => {
  t.same(matches(['orders.#'], 'orders.created'), ['orders.#'])
  t.same(matches(['orders.#'], 'orders.eu.created'), ['orders.#'])
  t.same(matches(['orders.#'], 'orders'), ['orders.#'])
  t.same(matches(['#'], 'anything.at.all'), ['#'])
  t.same(matches(['a.#.z'], 'a.z'), ['a.#.z'])
  t.same(matches(['a.#.z'], 'a.b.c.z'), ['a.#.z'])
  t.same(matches(['a.#.z'], 'a.b.c'), [])
  t.same(matches(['#.created'], 'created'), ['#.created'])
})

t.test('a subscriber matched by several patterns is visited once', async (t) => {
  const index = new TopicIndex<{ matchMark: number }>()
  const one = { matchMark: 0 }
  for (const pattern of ['orders.*', 'orders.#', '#', '#.#', 'orders.created']) index.add(pattern, one)
  let visits = 0
  index.match('orders.created', () => visits++)
  t.equal(visits, 1)
})

t.test('add and remove report the first and last subscriber of a pattern, and prune the trie', async (t) => {
  const index = new TopicIndex<{ matchMark: number }>()
  const a = { matchMark: 0 }
  const b = { matchMark: 0 }
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
