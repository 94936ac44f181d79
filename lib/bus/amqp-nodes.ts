import type { Options } from 'amqplib'
import { redact } from './amqp-session.js'

// The nodes of a RabbitMQ cluster as one connection target, for one
// connection. amqplib's recovery reconnects to what `connect` was given,
// once; given its documented object form of a URL, it reads the object's
// fields afresh on every attempt. Moving that object to the next node before
// each retry therefore makes recovery fail over across the cluster, with
// amqplib's backoff, and without a reconnect loop of ours beside it.

/** The `broker.url` option as a list of nodes. */
export function nodeUrls (url: string | readonly string[]): readonly string[] {
  return typeof url === 'string' ? [url] : url
}

/** The parts of one node's URL, in amqplib's object form (what its string form would have read). */
export function connectTarget (url: string): Options.Connect {
  const parsed = new URL(url)
  const query = parsed.searchParams
  // Empty (`?heartbeat=`) reads as absent, as amqplib's string form reads it, not as 0 (which would turn heartbeats off).
  const number = (name: string): number | undefined => query.get(name) ? Number(query.get(name)) : undefined
  return {
    protocol: parsed.protocol.slice(0, -1),
    hostname: parsed.hostname.replace(/^\[|\]$/g, ''),
    ...(parsed.port === '' ? {} : { port: Number(parsed.port) }),
    // amqplib defaults both to guest only when both are absent, like its string form.
    ...(parsed.username === '' && parsed.password === '' ? {} : { username: decoded(parsed.username), password: decoded(parsed.password) }),
    // Still escaped: amqplib unescapes the vhost of both forms itself.
    vhost: parsed.pathname.slice(1),
    ...(query.has('locale') ? { locale: query.get('locale') as string } : {}),
    ...defined({ heartbeat: number('heartbeat'), frameMax: number('frameMax'), channelMax: number('channelMax'), maxFrameSize: number('maxFrameSize') })
  }
}

/** A URL part percent-decoded; one with a bare `%` (a password `50%off`) as written, as amqplib's string form keeps it. */
function decoded (part: string): string {
  try {
    return decodeURIComponent(part)
  } catch {
    return part
  }
}

function defined<T extends object> (fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as Partial<T>
}

/** One connection's place in the node list: the target amqplib dials, moved on before each retry. */
export class NodeRotation {
  /** Handed to amqplib's `connect` once; its fields are the node of the current attempt. */
  readonly target: Options.Connect = {}
  readonly #urls: readonly string[]
  #index: number

  /** `start` spreads instances: each begins at its own node. */
  constructor (urls: readonly string[], start: number) {
    this.#urls = urls
    this.#index = start % urls.length
    this.#aim()
  }

  /** The node of the current (or last) attempt, without its password. */
  get current (): string {
    return redact(this.#urls[this.#index] as string)
  }

  /**
   * amqplib's delay before reconnect attempt `attempt` (1, 2, … since the last
   * success), in place of its own: none within a pass over the nodes, since
   * each attempt goes to another one, so that a long list with one live node
   * finds it at once; before each new pass, its backoff, doubling per pass from
   * `initialMs` up to `maxMs`, ±20% (with one node, every attempt is a pass).
   */
  delayBefore (attempt: number, initialMs: number, maxMs: number): number {
    if (attempt % this.#urls.length !== 0) return 0
    const pass = attempt / this.#urls.length
    // Capped so that the jitter's top lands on maxMs, as amqplib's own backoff does.
    const base = Math.min(maxMs / 1.2, initialMs * 2 ** (pass - 1))
    return Math.round(base * (0.8 + 0.4 * Math.random()))
  }

  /** The next attempt goes to the next node (the same one when there is only one). */
  advance (): void {
    if (this.#urls.length === 1) return
    this.#index = (this.#index + 1) % this.#urls.length
    this.#aim()
  }

  #aim (): void {
    for (const key of Object.keys(this.target)) delete this.target[key as keyof Options.Connect]
    Object.assign(this.target, connectTarget(this.#urls[this.#index] as string))
  }
}
