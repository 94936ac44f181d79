// Many deadlines on one timer. Connections due at the same millisecond share
// a bucket (JWT `exp` has whole seconds, so tokens signed together do), and
// the bucket times sit in a min-heap. A connection costs a set entry here,
// not a timer of its own.

// setTimeout cannot wait longer than this; the timer is re-armed until the deadline.
const MAX_TIMER_MS = 2 ** 31 - 1

export class Deadlines<T> {
  readonly #fire: (item: T, at: number) => void
  readonly #buckets = new Map<number, Set<T>>()
  /**
   * Bucket times, a binary min-heap; a time may outlive its emptied bucket.
   * Stale times are dropped once they outnumber the live buckets, so moving
   * a deadline over and over (a client refreshing its token in a loop)
   * cannot grow the heap until the old times come due.
   */
  #times: number[] = []
  #timer: NodeJS.Timeout | undefined
  #timerAt = Infinity

  constructor (fire: (item: T, at: number) => void) {
    this.#fire = fire
  }

  add (at: number, item: T): void {
    let bucket = this.#buckets.get(at)
    if (bucket === undefined) {
      bucket = new Set()
      this.#buckets.set(at, bucket)
      heapPush(this.#times, at)
    }
    bucket.add(item)
    if (at < this.#timerAt) this.#arm()
  }

  /** Times in the heap, stale ones included (for tests). */
  get heapSize (): number {
    return this.#times.length
  }

  delete (at: number, item: T): void {
    const bucket = this.#buckets.get(at)
    if (bucket?.delete(item) === true && bucket.size === 0) {
      this.#buckets.delete(at)
      this.#dropStaleTimes()
    }
  }

  close (): void {
    clearTimeout(this.#timer)
    this.#timerAt = Infinity
    this.#buckets.clear()
    this.#times.length = 0
  }

  /** Amortized O(log n) per delete: a rebuild costs O(n log n) and needs n deletes to come due again. */
  #dropStaleTimes (): void {
    if (this.#times.length <= 2 * this.#buckets.size) return
    // A sorted array is a valid min-heap.
    this.#times = [...this.#buckets.keys()].sort((a, b) => a - b)
  }

  #arm (): void {
    clearTimeout(this.#timer)
    const next = this.#times[0]
    if (next === undefined) {
      this.#timerAt = Infinity
      return
    }
    this.#timerAt = next
    this.#timer = setTimeout(this.#run, Math.min(MAX_TIMER_MS, Math.max(0, next - Date.now())))
    // Deadlines never keep the process alive: the sockets they belong to do.
    this.#timer.unref()
  }

  readonly #run = (): void => {
    const now = Date.now()
    while (this.#times.length > 0 && this.#times[0]! <= now) {
      const at = heapPop(this.#times)
      const bucket = this.#buckets.get(at)
      if (bucket === undefined) continue
      this.#buckets.delete(at)
      for (const item of bucket) this.#fire(item, at)
    }
    this.#dropStaleTimes()
    this.#arm()
  }
}

function heapPush (heap: number[], value: number): void {
  let i = heap.push(value) - 1
  while (i > 0) {
    const parent = (i - 1) >> 1
    if (heap[parent]! <= value) break
    heap[i] = heap[parent]!
    i = parent
  }
  heap[i] = value
}

function heapPop (heap: number[]): number {
  const top = heap[0]!
  const last = heap.pop()!
  if (heap.length > 0) {
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= heap.length) break
      const right = left + 1
      const child = right < heap.length && heap[right]! < heap[left]! ? right : left
      if (heap[child]! >= last) break
      heap[i] = heap[child]!
      i = child
    }
    heap[i] = last
  }
  return top
}
