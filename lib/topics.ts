// Topic and pattern syntax of docs/protocol.md section 3. A topic is 1 to 255 bytes
// of dot-separated words; a pattern may also use the AMQP wildcards `*` (one
// word) and `#` (zero or more words) as whole words.

// The client needs the same canonical form to key its subscriptions (see
// lib/client/index.ts), and it carries no server code, so it lives there.
export { canonicalPattern } from './client/patterns.js'

const WORD = /^[A-Za-z0-9_\-:@]+$/
const MAX_TOPIC_BYTES = 255

/** Routing keys under this prefix are the plugin's own control messages: never a topic (`$` is not a topic character), never routed to sockets. */
export const CONTROL_PREFIX = '$evsock.'

/** Whether `value` can stand as one word of a topic (no dots, no wildcards). */
export function isTopicWord (value: string): boolean {
  return WORD.test(value)
}

/** Returns why `topic` is not a valid concrete topic, or undefined when it is. */
export function topicProblem (topic: unknown): string | undefined {
  return check(topic, false)
}

/** Returns why `pattern` is not a valid subscription pattern, or undefined when it is. */
export function patternProblem (pattern: unknown): string | undefined {
  return check(pattern, true)
}

function check (value: unknown, wildcards: boolean): string | undefined {
  if (typeof value !== 'string') return 'must be a string'
  if (value.length === 0) return 'must not be empty'
  // Words are ASCII, so a string of valid words has as many bytes as characters;
  // a longer string is refused before any splitting.
  if (value.length > MAX_TOPIC_BYTES) return `must be at most ${MAX_TOPIC_BYTES} bytes`
  for (const word of value.split('.')) {
    if (word === '*' || word === '#') {
      if (!wildcards) return 'must not contain wildcards (* or #)'
    } else if (!WORD.test(word)) {
      return word.length === 0
        ? 'must not have empty words'
        : `word ${JSON.stringify(word)} may only hold A-Z a-z 0-9 _ - : @`
    }
  }
  return undefined
}

/**
 * The `#` words of `pattern`. They are what makes matching costly: each one
 * tries every split of the remaining topic words, and RabbitMQ's topic
 * exchange multiplies those tries (docs/security.md has the figures); `*`
 * consumes exactly one word and branches nowhere.
 */
export function multiWordWildcards (pattern: string): number {
  let count = 0
  for (const word of pattern.split('.')) if (word === '#') count++
  return count
}
