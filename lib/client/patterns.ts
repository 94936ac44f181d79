// AMQP topic-exchange matching (docs/protocol.md section 3), used to fan an event
// out to the local handlers: the server sends an event once per connection
// even when several of the connection's patterns match it.

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

/** Compiles `pattern` once into a predicate over concrete topics. */
export function compilePattern (pattern: string): (topic: string) => boolean {
  const words = pattern.split('.')
  if (!words.includes('*') && !words.includes('#')) return (topic) => topic === pattern
  return (topic) => wordsMatch(words, topic.split('.'))
}

// reachable[j] is true when the pattern words consumed so far can match the
// first j topic words. One pass per pattern word keeps it O(pattern × topic)
// however many `#` there are, where naive backtracking is exponential.
function wordsMatch (pattern: string[], topic: string[]): boolean {
  let reachable = topic.map(() => false).concat(false)
  reachable[0] = true
  for (const word of pattern) {
    const next = reachable.map(() => false)
    for (let j = 0; j <= topic.length; j++) {
      if (word === '#') {
        // Zero words, or one more word after a position already reached.
        next[j] = reachable[j] === true || (j > 0 && next[j - 1] === true)
      } else if (j > 0 && reachable[j - 1] === true) {
        next[j] = word === '*' || word === topic[j - 1]
      }
    }
    reachable = next
  }
  return reachable[topic.length] === true
}
