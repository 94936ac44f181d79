// AMQP topic-exchange matching (PROTOCOL.md section 3), used to fan an event
// out to the local handlers: the server sends an event once per connection
// even when several of the connection's patterns match it.

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
