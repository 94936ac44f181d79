import type { FastifyBaseLogger } from 'fastify'
import { TopicIndex } from './client/topic-index.js'
import type { Bus } from './bus/types.js'

// The one owner of subscription state: which subscriber (connection) holds
// which canonical pattern, the index that matches topics to them, how many
// hold each pattern, and the bind and unbind calls to the bus that follow.
// The bus only remembers what it must to bind again after a reconnect.

/**
 * A subscriber's entry in the index, with the patterns it holds: the pattern
 * itself while it holds one, as most connections do; an array while they are
 * few (a Set's hash table costs about 300 bytes per connection, an array of
 * one about 56 bytes more than the string); a Set past `SET_FROM`, so that a
 * client allowed thousands (`maxSubscriptions`) cannot make each of its
 * subscribes search them all.
 */
interface Holding<S> {
  readonly subscriber: S
  patterns: string | string[] | Set<string>
}

const SET_FROM = 16

function holds (holding: Holding<unknown>, pattern: string): boolean {
  const { patterns } = holding
  return typeof patterns === 'string' ? patterns === pattern : Array.isArray(patterns) ? patterns.includes(pattern) : patterns.has(pattern)
}

function sizeOf (holding: Holding<unknown>): number {
  const { patterns } = holding
  return typeof patterns === 'string' ? 1 : Array.isArray(patterns) ? patterns.length : patterns.size
}

/** The patterns held, as something to walk. */
function listOf (holding: Holding<unknown>): Iterable<string> {
  return typeof holding.patterns === 'string' ? [holding.patterns] : holding.patterns
}

function addTo (holding: Holding<unknown>, pattern: string): void {
  const { patterns } = holding
  if (typeof patterns === 'string') holding.patterns = [patterns, pattern]
  else if (!Array.isArray(patterns)) patterns.add(pattern)
  else if (patterns.length < SET_FROM) patterns.push(pattern)
  else holding.patterns = new Set([...patterns, pattern])
}

/** Whether it held `pattern`; a holding left with none is the caller's to drop. */
function deleteFrom (holding: Holding<unknown>, pattern: string): boolean {
  const { patterns } = holding
  if (typeof patterns === 'string') {
    if (patterns !== pattern) return false
    holding.patterns = []
    return true
  }
  if (!Array.isArray(patterns)) return patterns.delete(pattern)
  const at = patterns.indexOf(pattern)
  if (at !== -1) patterns.splice(at, 1)
  return at !== -1
}

export class Subscriptions<S> {
  readonly #bus: Bus
  readonly #log: FastifyBaseLogger
  readonly #index = new TopicIndex<Holding<S>>()
  readonly #holdings = new Map<S, Holding<S>>()
  /** Per pattern, its latest bind or unbind: the next one waits for it. */
  readonly #latest = new Map<string, Promise<void>>()
  #count = 0
  /** The visitor of the match under way, so that one bound callback serves every match. */
  #visit: ((subscriber: S) => void) | undefined
  readonly #visitHolding = (holding: Holding<S>): void => { this.#visit!(holding.subscriber) }

  constructor (bus: Bus, log: FastifyBaseLogger) {
    this.#bus = bus
    this.#log = log
  }

  /** Subscriptions held, summed over subscribers. */
  get count (): number {
    return this.#count
  }

  /** Distinct patterns held, each bound to the bus once. */
  get patternCount (): number {
    return this.#index.patternCount
  }

  has (subscriber: S, pattern: string): boolean {
    const holding = this.#holdings.get(subscriber)
    return holding !== undefined && holds(holding, pattern)
  }

  countOf (subscriber: S): number {
    const holding = this.#holdings.get(subscriber)
    return holding === undefined ? 0 : sizeOf(holding)
  }

  /** A copy: the caller may remove while it walks them. */
  patternsOf (subscriber: S): string[] {
    const holding = this.#holdings.get(subscriber)
    return holding === undefined ? [] : [...listOf(holding)]
  }

  /**
   * Holds `pattern` for `subscriber` at once, and resolves once events of it
   * are routed here: the pattern's first holder binds it, later ones wait for
   * that bind. When it rejects, the subscription is not held.
   */
  async add (subscriber: S, pattern: string): Promise<void> {
    let holding = this.#holdings.get(subscriber)
    if (holding === undefined) {
      holding = { subscriber, patterns: pattern }
      this.#holdings.set(subscriber, holding)
    } else if (holds(holding, pattern)) {
      return
    } else {
      addTo(holding, pattern)
    }
    this.#count++
    const first = this.#index.add(pattern, holding)
    try {
      await (first ? this.#enqueue(pattern, () => this.#bus.bind(pattern)) : this.#settled(pattern))
    } catch (err) {
      this.remove(subscriber, pattern)
      throw err
    }
  }

  /** Returns whether `subscriber` held `pattern`; its last holder unbinds it. */
  remove (subscriber: S, pattern: string): boolean {
    const holding = this.#holdings.get(subscriber)
    if (holding === undefined || !deleteFrom(holding, pattern)) return false
    this.#count--
    if (sizeOf(holding) === 0) this.#holdings.delete(subscriber)
    this.#unindex(pattern, holding)
    return true
  }

  /** Everything `subscriber` holds, as when its socket closes: one pass, not a search per pattern. */
  removeAll (subscriber: S): void {
    const holding = this.#holdings.get(subscriber)
    if (holding === undefined) return
    this.#holdings.delete(subscriber)
    this.#count -= sizeOf(holding)
    for (const pattern of listOf(holding)) this.#unindex(pattern, holding)
  }

  /** Takes `holding` off `pattern` in the index; the pattern's last holder unbinds it. */
  #unindex (pattern: string, holding: Holding<S>): void {
    if (this.#index.remove(pattern, holding)) {
      this.#enqueue(pattern, () => this.#bus.unbind(pattern)).catch((err: unknown) => {
        this.#log.warn({ err, pattern }, 'event socket could not unbind a pattern')
      })
    }
  }

  /** Calls `visit` once for every subscriber holding a pattern that matches the concrete `topic`. */
  match (topic: string, visit: (subscriber: S) => void): void {
    const outer = this.#visit
    this.#visit = visit
    try {
      this.#index.match(topic, this.#visitHolding)
    } finally {
      this.#visit = outer
    }
  }

  /** Settles once the pattern's latest bind or unbind did. */
  #settled (pattern: string): Promise<void> {
    return this.#latest.get(pattern) ?? Promise.resolve()
  }

  // One pattern's calls run in order, so that a quick unsubscribe-then-subscribe
  // can never leave it unbound, and a second holder waits for the first's bind.
  #enqueue (pattern: string, operation: () => Promise<void>): Promise<void> {
    const next = this.#settled(pattern).catch(() => {}).then(operation)
    this.#latest.set(pattern, next)
    const forget = (): void => {
      if (this.#latest.get(pattern) === next) this.#latest.delete(pattern)
    }
    next.then(forget, forget)
    return next
  }
}
