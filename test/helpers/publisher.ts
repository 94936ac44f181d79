import type { FastifyInstance } from 'fastify'
import { delay } from './server.js'
import { within } from './wait.js'

// Publishers that publish continuously while a test breaks things, and record
// exactly what they published: every publish that resolved, in the order of
// the calls, which is the order the bus keeps per publisher. Each event's
// data names its publisher and its number in that publisher's sequence, so
// that a client's record can be checked against this one
// (test/helpers/delivery-check.ts).

/** What every event of these tests carries. */
export interface Stamp {
  /** The publisher. */
  p: number
  /** Its number in the publisher's sequence, from 0. */
  n: number
  /** When it was published, on `stampClock()`, for latency. */
  at: number
  /** On the last events of each publisher (test/helpers/resuming-client.ts waits for them). */
  last?: true
}

/**
 * Epoch milliseconds with a fraction: latencies of a few milliseconds, read
 * with Date.now(), would be rounded to whole ones, and a ratio of two of them
 * (4 against 7 ms) would say more about the rounding than about the server.
 */
export function stampClock (): number {
  return performance.timeOrigin + performance.now()
}

export interface Published {
  p: number
  n: number
  topic: string
  id: string
}

/** The topic of event `n`: orders of ten customers, created then paid, and stock now and then. */
export function defaultTopic (n: number): string {
  if (n % 7 === 6) return 'stock.x'
  const customer = Math.floor(n / 2) % 10
  return n % 2 === 0 ? `orders.${customer}.created` : `orders.${customer}.paid`
}

/** The default topic of every publisher's last event: matched by `orders.#` and `*.*.paid` alike. */
export const SENTINEL_TOPIC = 'orders.end.paid'

/** A publish that rejected: its event may still have been routed (a lost confirm), and delivered. */
export interface Rejected {
  p: number
  n: number
  topic: string
  error: unknown
}

export interface PublisherOptions {
  /** Publishers running at once, each with its own sequence. Default 2. */
  publishers?: number
  /** The number (`p`) of the first of them, the others following: publishers of several apps in one test keep distinct numbers. Default 0. */
  first?: number
  /** Publishes each publisher has in flight at once (sent in order, not waiting for one another). Default 8. */
  batch?: number
  /** Pause after each batch, ms: sets the rate. Default 20 (with the default batch, up to 400 events/s a publisher: enough to keep events in flight through any fault, and light enough to leave a loaded two-core machine to the rest of the suite). */
  pauseMs?: number
  topic?: (n: number, p: number) => string
  /** Each publisher ends with one last event on each of these, so that every client's patterns see one. Default [SENTINEL_TOPIC]. */
  sentinels?: string[]
}

export interface Publishers {
  /** Every publish that resolved so far, per publisher (`published[i]` is publisher `first + i`'s), in order. */
  readonly published: Published[][]
  /** Publishes that rejected: a test that expects none asserts this is empty. */
  readonly failures: unknown[]
  /** The same, with the event each was for. */
  readonly rejected: Rejected[]
  /** Resolved publishes so far, all publishers together. */
  count: () => number
  /** Stops publishing, waits for what is in flight, then publishes each publisher's last events (its sentinels). */
  stop: () => Promise<void>
}

/** Starts publishing through `app` at once; stopped when the test ends, if the test did not. */
export function startPublishers (t: { teardown: (fn: () => Promise<void>) => void }, app: FastifyInstance, options: PublisherOptions = {}): Publishers {
  const { publishers = 2, first = 0, batch = 8, pauseMs = 20, topic = defaultTopic, sentinels = [SENTINEL_TOPIC] } = options
  const published: Published[][] = Array.from({ length: publishers }, () => [])
  const failures: unknown[] = []
  const rejected: Rejected[] = []
  const stopping = new AbortController()
  const loops = published.map(async (record, i) => {
    const p = first + i
    let n = 0
    while (!stopping.signal.aborted) {
      const inFlight = Array.from({ length: batch }, () => {
        const stamp: Stamp = { p, n: n++, at: stampClock() }
        const eventTopic = topic(stamp.n, p)
        return app.publish(eventTopic, stamp).then(({ id }) => ({ p, n: stamp.n, topic: eventTopic, id }), (error: unknown) => {
          failures.push(error)
          rejected.push({ p, n: stamp.n, topic: eventTopic, error })
          return undefined
        })
      })
      for (const result of await Promise.all(inFlight)) if (result !== undefined) record.push(result)
      await delay(pauseMs)
    }
    for (const sentinel of sentinels) {
      const stamp: Stamp = { p, n: n++, at: stampClock(), last: true }
      const { id } = await app.publish(sentinel, stamp)
      record.push({ p, n: stamp.n, topic: sentinel, id })
    }
  })
  let stopped: Promise<void> | undefined
  const stop = (): Promise<void> => {
    stopping.abort()
    stopped ??= within(Promise.all(loops).then(() => {}), { what: 'the publishers to stop and publish their sentinels', timeoutMs: 15_000 })
    return stopped
  }
  t.teardown(async () => { await stop().catch(() => {}) })
  return { published, failures, rejected, count: () => published.reduce((sum, record) => sum + record.length, 0), stop }
}
