// The subscriptions of all local connections, in a trie of words. Matching a
// topic walks its words (branching at `*` and `#` nodes), so its cost follows
// the topic's length and the wildcards on its path, not the number of patterns.
// Each (node, word position) pair is walked at most once per match, so the
// cost is bounded by (trie nodes on the path × topic words) however many `#`
// a pattern holds; without that, `a.#.#.#…` tried every split of the topic at
// every `#` and took seconds.

/** Anything held in the index. `matchMark` lets a match visit it once without allocating a set. */
export interface Subscriber {
  matchMark: number
}

interface Node<S extends Subscriber> {
  words: Map<string, Node<S>>
  star: Node<S> | undefined
  hash: Node<S> | undefined
  subscribers: Set<S> | undefined
  /** Set on a `#` node: the match that last walked it, and the lowest position it was walked from in that match. */
  walkedMark: number
  walkedFrom: number
}

function newNode<S extends Subscriber> (): Node<S> {
  return { words: new Map(), star: undefined, hash: undefined, subscribers: undefined, walkedMark: 0, walkedFrom: 0 }
}

let lastMark = 0

export class TopicIndex<S extends Subscriber> {
  #root: Node<S> = newNode()
  #patterns = 0

  /** Distinct patterns with at least one subscriber. */
  get patternCount (): number {
    return this.#patterns
  }

  /** Adds `subscriber` under `pattern`; returns true when the pattern had no subscriber before. */
  add (pattern: string, subscriber: S): boolean {
    let node = this.#root
    for (const word of pattern.split('.')) {
      node = this.#child(node, word)
    }
    node.subscribers ??= new Set()
    const first = node.subscribers.size === 0
    node.subscribers.add(subscriber)
    if (first) this.#patterns++
    return first
  }

  /** Removes `subscriber` from `pattern`; returns true when it was the pattern's last subscriber. */
  remove (pattern: string, subscriber: S): boolean {
    const path: Array<[Node<S>, string]> = []
    let node: Node<S> | undefined = this.#root
    for (const word of pattern.split('.')) {
      path.push([node, word])
      node = step(node, word)
      if (node === undefined) return false
    }
    if (node.subscribers?.delete(subscriber) !== true) return false
    if (node.subscribers.size > 0) return false
    node.subscribers = undefined
    this.#patterns--
    prune(path, node)
    return true
  }

  /** Calls `visit` once for every subscriber holding a pattern that matches the concrete `topic`. */
  match (topic: string, visit: (subscriber: S) => void): void {
    const mark = ++lastMark
    walk(this.#root, topic.split('.'), 0, mark, visit)
  }

  #child (node: Node<S>, word: string): Node<S> {
    if (word === '*') return (node.star ??= newNode())
    if (word === '#') return (node.hash ??= newNode())
    let child = node.words.get(word)
    if (child === undefined) {
      child = newNode()
      node.words.set(word, child)
    }
    return child
  }
}

function step<S extends Subscriber> (node: Node<S>, word: string): Node<S> | undefined {
  if (word === '*') return node.star
  if (word === '#') return node.hash
  return node.words.get(word)
}

function isEmpty<S extends Subscriber> (node: Node<S>): boolean {
  return node.subscribers === undefined && node.words.size === 0 && node.star === undefined && node.hash === undefined
}

// Drops the nodes that no longer lead to a subscriber, from the leaf up, so
// that subscribe/unsubscribe storms leave no garbage behind.
function prune<S extends Subscriber> (path: Array<[Node<S>, string]>, leaf: Node<S>): void {
  let node = leaf
  for (let i = path.length - 1; i >= 0 && isEmpty(node); i--) {
    const [parent, word] = path[i]!
    if (word === '*') parent.star = undefined
    else if (word === '#') parent.hash = undefined
    else parent.words.delete(word)
    node = parent
  }
}

function walk<S extends Subscriber> (node: Node<S>, words: string[], at: number, mark: number, visit: (subscriber: S) => void): void {
  const hash = node.hash
  if (hash !== undefined) {
    // `#` absorbs zero or more words: the walk goes on below it from every
    // position from `at` to the end. A `#` node has one parent, so the
    // positions already walked in this match are exactly those from
    // `walkedFrom` on; only the ones before it are new. Every other node is
    // reached from its nearest `#` ancestor at one position per position of
    // that ancestor, so no (node, position) pair is walked twice.
    let end = words.length
    if (hash.walkedMark === mark) end = hash.walkedFrom - 1
    else hash.walkedMark = mark
    if (at <= end) {
      hash.walkedFrom = at
      for (let rest = at; rest <= end; rest++) walk(hash, words, rest, mark, visit)
    }
  }
  if (at === words.length) {
    if (node.subscribers !== undefined) {
      for (const subscriber of node.subscribers) {
        if (subscriber.matchMark !== mark) {
          subscriber.matchMark = mark
          visit(subscriber)
        }
      }
    }
    return
  }
  const word = words[at]!
  const exact = node.words.get(word)
  if (exact !== undefined) walk(exact, words, at + 1, mark, visit)
  if (node.star !== undefined) walk(node.star, words, at + 1, mark, visit)
}
