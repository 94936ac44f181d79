import type { Published } from './publisher.js'

// The checker of the history tests: what a subscription's handler got,
// against every event published (test/helpers/publisher.ts). Each matching
// event exactly once, in publish order per publisher. The report says what
// went wrong first (missing, duplicate, out of order, unexpected) and how
// much, and is empty when nothing did.

/** What a handler got, in the order it got it. */
export interface Got {
  p: number
  n: number
  topic: string
}

/**
 * AMQP topic matching written out again, on purpose apart from the library's
 * matcher (lib/client/topic-index.ts): the checker must not share a bug with
 * what it checks. Enough for the patterns of these tests.
 */
export function matches (pattern: string, topic: string): boolean {
  const match = (pw: string[], tw: string[]): boolean => {
    if (pw.length === 0) return tw.length === 0
    const [head, ...rest] = pw
    if (head === '#') return Array.from({ length: tw.length + 1 }, (_, skip) => skip).some((skip) => match(rest, tw.slice(skip)))
    if (tw.length === 0) return false
    return (head === '*' || head === tw[0]) && match(rest, tw.slice(1))
  }
  return match(pattern.split('.'), topic.split('.'))
}

/** Compact runs: [3,4,5,9] → "3-5, 9" (at most `most` runs). */
function runs (numbers: number[], most = 8): string {
  const out: string[] = []
  let start = numbers[0]
  for (let i = 1; i <= numbers.length && out.length < most; i++) {
    const previous = numbers[i - 1] as number
    if (numbers[i] !== previous + 1) {
      out.push(start === previous ? `${previous}` : `${start}-${previous}`)
      start = numbers[i]
    }
  }
  return out.join(', ') + (out.length === most ? ', …' : '')
}

function checkPublisher (p: number, expected: Published[], got: Got[]): string[] {
  const problems: string[] = []
  const wanted = new Map(expected.map((event) => [event.n, event]))
  const seen = new Set<number>()
  let duplicate: Got | undefined
  let outOfOrder: string | undefined
  let previous = -1
  for (const event of got) {
    if (seen.has(event.n)) duplicate ??= event
    else if (event.n < previous) outOfOrder ??= `n=${event.n} after n=${previous}`
    seen.add(event.n)
    previous = Math.max(previous, event.n)
  }
  const missing = expected.filter((event) => !seen.has(event.n))
  const unexpected = got.filter((event) => !wanted.has(event.n))
  const duplicates = got.length - seen.size
  if (missing.length > 0) {
    const first = missing[0] as Published
    problems.push(`${missing.length} missing (n ${runs(missing.map((event) => event.n))}); first missing n=${first.n} (${first.topic})`)
  }
  if (duplicate !== undefined) problems.push(`${duplicates} duplicate(s); first duplicate n=${duplicate.n} (${duplicate.topic})`)
  if (outOfOrder !== undefined) problems.push(`out of order: first ${outOfOrder}`)
  if (unexpected.length > 0) {
    const first = unexpected[0] as Got
    problems.push(`${unexpected.length} unexpected (not published, or not matching); first n=${first.n} (${first.topic})`)
  }
  return problems.map((problem) => `publisher ${p}: ${expected.length} expected, ${got.length} received: ${problem}`)
}

/**
 * Checks what a handler subscribed to `pattern` got against everything
 * published (`published[p]` is publisher p's record, in order). Returns ''
 * when it got every matching event exactly once, in order per publisher;
 * otherwise one line per problem.
 */
export function deliveryReport (pattern: string, published: Published[][], got: Got[]): string {
  const lines: string[] = []
  const publishers = new Set([...published.keys(), ...got.map((event) => event.p)])
  for (const p of publishers) {
    const expected = (published[p] ?? []).filter((event) => matches(pattern, event.topic))
    lines.push(...checkPublisher(p, expected, got.filter((event) => event.p === p)))
  }
  return lines.length === 0 ? '' : `${pattern}:\n  ${lines.join('\n  ')}`
}
