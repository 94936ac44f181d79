import t from 'tap'
import { compilePattern } from '../lib/client/patterns.js'

// Which topics a pattern matches is the shared table's job
// (test/topic-cases.test.ts, where compilePattern runs every row).

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
