// Pattern spelling and per-pattern matching for the client (docs/protocol.md
// section 3). The server sends an event once per connection even when several
// of the connection's patterns match it, so the client sorts it out to its
// handlers itself. The matching is lib/client/topic-index.ts, the server's too.
import { TopicIndex } from './topic-index.js'

/**
 * The one spelling of `pattern` the server keeps: in every run of wildcard
 * words the `*`s come first, then at most one `#` (`#.#` is `#`; `#.*`, `*.#`
 * and `#.*.#` are all `*.#`). A run with s `*`s and any `#` matches "s words or
 * more" however it is spelled, so the meaning is unchanged; what changes is
 * the cost of matching, which grows with every `#`. Only wildcard words are
 * touched, so a malformed pattern stays malformed.
 */
export function canonicalPattern (pattern: string): string {
  if (!pattern.includes('#')) return pattern
  const words = pattern.split('.')
  const out: string[] = []
  let stars = 0
  let hash = false
  const endRun = (): void => {
    for (; stars > 0; stars--) out.push('*')
    if (hash) out.push('#')
    hash = false
  }
  for (const word of words) {
    if (word === '*') stars++
    else if (word === '#') hash = true
    else {
      endRun()
      out.push(word)
    }
  }
  endRun()
  return out.join('.')
}

/**
 * Compiles `pattern` once into a predicate over concrete topics: the client's
 * per-subscription filter, on the same trie as the server's index so that the
 * two cannot disagree. A plain pattern needs no trie.
 */
export function compilePattern (pattern: string): (topic: string) => boolean {
  if (!pattern.includes('*') && !pattern.includes('#')) return (topic) => topic === pattern
  const index = new TopicIndex<true>()
  index.add(pattern, true)
  return (topic) => index.matches(topic)
}
