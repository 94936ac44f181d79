// A FIFO over one array with a moving head, shared by the logs that drop
// from the front: the pending queue behind an ack window, the in-process
// history, and the recent messages of the RabbitMQ history. Shifting clears
// the slot and moves the head (O(1)); the drained prefix is sliced off now
// and then. Every item keeps the sequence number it was pushed with (0 for
// the first), whatever compaction does, so readers can hold a place in it.

/** Drained slots kept before compaction is considered. */
const COMPACT_AFTER = 1024

export class QueueWindow<T> {
  #items: Array<T | undefined> = []
  /** Index in `#items` of the oldest item. */
  #head = 0
  /** Sequence number of `#items[0]`. */
  #base = 0

  get length (): number {
    return this.#items.length - this.#head
  }

  /** Sequence number of the oldest item (`end` when empty). */
  get first (): number {
    return this.#base + this.#head
  }

  /** Sequence number the next pushed item gets. */
  get end (): number {
    return this.#base + this.#items.length
  }

  /** The oldest item. */
  get oldest (): T | undefined {
    return this.#items[this.#head]
  }

  push (item: T): void {
    this.#items.push(item)
  }

  shift (): T | undefined {
    if (this.#head === this.#items.length) return undefined
    const item = this.#items[this.#head]
    this.#items[this.#head++] = undefined
    // Compact now and then, so a long-lived queue does not keep its drained prefix.
    if (this.#head > COMPACT_AFTER && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#base += this.#head
      this.#head = 0
    }
    return item
  }

  /** The item with sequence number `seq`, or undefined once shifted or before it is pushed. */
  at (seq: number): T | undefined {
    return seq < this.first ? undefined : this.#items[seq - this.#base]
  }

  /**
   * Sequence number of the first item for which `before` is false (`end`
   * when there is none), for items ordered so that `before` holds for a
   * prefix of them: a binary search.
   */
  search (before: (item: T) => boolean): number {
    let low = this.#head
    let high = this.#items.length
    while (low < high) {
      const middle = (low + high) >>> 1
      if (before(this.#items[middle] as T)) low = middle + 1
      else high = middle
    }
    return this.#base + low
  }
}
