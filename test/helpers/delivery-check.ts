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

/** What can be wrong with a handler's record. */
export type Problem = 'missing' | 'duplicate' | 'order' | 'unexpected'

const ALL_PROBLEMS: readonly Problem[] = ['missing', 'duplicate', 'order', 'unexpected']

function checkPublisher (p: number, expected: Published[], got: Got[], maybe: Got[]): Array<[Problem, string]> {
  const problems: Array<[Problem, string]> = []
  const wanted = new Map<number, Got>([...maybe, ...expected].map((event) => [event.n, event]))
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
    problems.push(['missing', `${missing.length} missing (n ${runs(missing.map((event) => event.n))}); first missing n=${first.n} (${first.topic})`])
  }
  if (duplicate !== undefined) problems.push(['duplicate', `${duplicates} duplicate(s); first duplicate n=${duplicate.n} (${duplicate.topic})`])
  if (outOfOrder !== undefined) problems.push(['order', `out of order: first ${outOfOrder}`])
  if (unexpected.length > 0) {
    const first = unexpected[0] as Got
    problems.push(['unexpected', `${unexpected.length} unexpected (not published, or not matching); first n=${first.n} (${first.topic})`])
  }
  return problems.map(([kind, problem]) => [kind, `publisher ${p}: ${expected.length} expected, ${got.length} received: ${problem}`])
}

export interface ReportOptions {
  /** The kinds of problem to report (a bus that does not promise the order: all but 'order'). Default all. */
  only?: readonly Problem[]
  /** Events that may or may not arrive (their publish rejected, yet they may have been routed): never missing nor unexpected, still not twice. */
  maybe?: readonly Got[]
}

/**
 * Checks what a handler subscribed to `pattern` got against everything
 * published (`published[p]` is publisher p's record, in order). Returns ''
 * when it got every matching event exactly once, in order per publisher;
 * otherwise one line per problem.
 */
export function deliveryReport (pattern: string, published: Published[][], got: Got[], { only = ALL_PROBLEMS, maybe = [] }: ReportOptions = {}): string {
  const lines: string[] = []
  const publishers = new Set([...published.keys(), ...got.map((event) => event.p)])
  for (const p of publishers) {
    const expected = (published[p] ?? []).filter((event) => matches(pattern, event.topic))
    const problems = checkPublisher(p, expected, got.filter((event) => event.p === p), maybe.filter((event) => event.p === p && matches(pattern, event.topic)))
    for (const [kind, line] of problems) if (only.includes(kind)) lines.push(line)
  }
  return lines.length === 0 ? '' : `${pattern}:\n  ${lines.join('\n  ')}`
}
