import t from 'tap'
import { compilePattern } from '../lib/client/patterns.js'

// Which topics a pattern matches is the shared table's job
// (test/topic-cases.test.ts, where compilePattern runs every row).

t.test('many # stay fast (no exponential backtracking)', async (t) => {
  const words = (word: string, count: number): string => Array.from({ length: count }, () => word).join('.')
  // Backtracking would try every way of sharing 60 words among the #s, some
  // 10^17 to 10^23 of them, and never return: that it answers at all is the
  // proof, with no clock to read (a timing ratio failed on a loaded machine).
  // The second pattern's #s are apart, so no canonical spelling merges them.
  for (const pattern of [words('#', 30) + '.z', words('#.a', 15) + '.z']) {
    const match = compilePattern(pattern)
    t.equal(match(words('a', 60)), false, `${pattern}: 60 words without the final z, no match`)
    t.equal(match(words('a', 60) + '.z'), true, `${pattern}: with it, a match`)
  }
})
