// The one topic matcher of the package (AMQP topic-exchange semantics,
// docs/protocol.md section 3): the server's index of every local subscription,
// the in-process bus's bindings and the client's per-pattern matching all walk
// this trie. It lives in the client half because the client carries no server
// code, while the server may import from here.
//
// Matching a topic walks its words (branching at `*` and `#` nodes), so its
// cost follows the topic's length and the wildcards on its path, not the
// number of patterns. Each (node, word position) pair is walked at most once
// per match, so the cost is bounded by (trie nodes on the path × topic words)
// however many `#` a pattern holds; without that, `a.#.#.#…` tried every split
// of the topic at every `#` and took seconds.

// The bookkeeping that lets a match visit a subscriber once without
// allocating a set lives here, one record per subscriber, rather than as a
// field every subscriber has to carry.
interface Holder<S> {
  readonly subscriber: S
  /** The match that last visited it. */
  mark: number
  /** Patterns it holds in this index; the record goes with the last. */
  patterns: number
}

interface Node<S> {
  words: Map<string, Node<S>>
  star: Node<S> | undefined
  hash: Node<S> | undefined
  holders: Set<Holder<S>> | undefined
  /** Set on a `#` node: the match that last walked it, and the lowest position it was walked from in that match. */
  walkedMark: number
  walkedFrom: number
}

function newNode<S> (): Node<S> {
  return { words: new Map(), star: undefined, hash: undefined, holders: undefined, walkedMark: 0, walkedFrom: 0 }
}

export class TopicIndex<S> {
  #root: Node<S> = newNode()
  #holders = new Map<S, Holder<S>>()
  #patterns = 0
  #mark = 0

  /** Distinct patterns with at least one subscriber. */
  get patternCount (): number {
    return this.#patterns
  }

  /** Adds `subscriber` under `pattern`; returns true when the pattern had no subscriber before. */
  add (pattern: string, subscriber: S): boolean {
    let node = this.#root
    for (const word of pattern.split('.')) node = child(node, word)
    let holder = this.#holders.get(subscriber)
    if (holder === undefined) {
      holder = { subscriber, mark: 0, patterns: 0 }
      this.#holders.set(subscriber, holder)
    }
    node.holders ??= new Set()
    if (node.holders.has(holder)) return false
    const first = node.holders.size === 0
    node.holders.add(holder)
    holder.patterns++
    if (first) this.#patterns++
    return first
  }

  /** Removes `subscriber` from `pattern`; returns true when it was the pattern's last subscriber. */
  remove (pattern: string, subscriber: S): boolean {
    const holder = this.#holders.get(subscriber)
    if (holder === undefined) return false
    const path: Array<[Node<S>, string]> = []
    let node: Node<S> | undefined = this.#root
    for (const word of pattern.split('.')) {
      path.push([node, word])
      node = step(node, word)
      if (node === undefined) return false
    }
    if (node.holders?.delete(holder) !== true) return false
    if (--holder.patterns === 0) this.#holders.delete(subscriber)
    if (node.holders.size > 0) return false
    node.holders = undefined
    this.#patterns--
    prune(path, node)
    return true
  }

  /** Calls `visit` once for every subscriber holding a pattern that matches the concrete `topic`. */
  match (topic: string, visit: (subscriber: S) => void): void {
    walk(this.#root, topic.split('.'), 0, ++this.#mark, visit)
  }

  /** Whether any pattern held matches the concrete `topic`. */
  matches (topic: string): boolean {
    let hit = false
    this.match(topic, () => { hit = true })
    return hit
  }
}

function child<S> (node: Node<S>, word: string): Node<S> {
  if (word === '*') return (node.star ??= newNode())
  if (word === '#') return (node.hash ??= newNode())
  let next = node.words.get(word)
  if (next === undefined) {
    next = newNode()
    node.words.set(word, next)
  }
  return next
}

function step<S> (node: Node<S>, word: string): Node<S> | undefined {
  if (word === '*') return node.star
  if (word === '#') return node.hash
  return node.words.get(word)
}

function isEmpty<S> (node: Node<S>): boolean {
  return node.holders === undefined && node.words.size === 0 && node.star === undefined && node.hash === undefined
}

// Drops the nodes that no longer lead to a subscriber, from the leaf up, so
// that subscribe/unsubscribe storms leave no garbage behind.
function prune<S> (path: Array<[Node<S>, string]>, leaf: Node<S>): void {
  let node = leaf
  for (let i = path.length - 1; i >= 0 && isEmpty(node); i--) {
    const [parent, word] = path[i]!
    if (word === '*') parent.star = undefined
    else if (word === '#') parent.hash = undefined
    else parent.words.delete(word)
    node = parent
  }
}

function walk<S> (node: Node<S>, words: string[], at: number, mark: number, visit: (subscriber: S) => void): void {
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
    if (node.holders !== undefined) {
      for (const holder of node.holders) {
        if (holder.mark !== mark) {
          holder.mark = mark
          visit(holder.subscriber)
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
