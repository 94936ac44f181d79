import t from 'tap'
import { compilePattern } from '../lib/client/patterns.js'

// Which topics a pattern matches is the shared table's job
// (test/topic-cases.test.ts, where compilePattern runs every row).

t.test('many # stay fast (no exponential backtracking)', async (t) => {
  const pattern = Array.from({ length: 30 }, () => '#').join('.') + '.z'
  const topic = Array.from({ length: 60 }, () => 'a').join('.')
  const started = performance.now()
  t.equal(compilePattern(pattern)(topic), false)
  t.ok(performance.now() - started < 200)
})
