import { randomUUID } from 'node:crypto'
import { createClient } from 'redis'
import { ClosedError } from '../../lib/errors.js'
import { TopicIndex } from '../../lib/client/topic-index.js'
import type { Bus, BusHealth, BusMessage, BusState, Deliver } from '../../lib/bus/types.js'

// A test-only bus over Redis pub/sub, written the way a user would write one
// against the public `Bus` contract: every instance publishes to and
// subscribes to one channel, and filters by its bound patterns locally.
// Redis has no routing by pattern of AMQP's kind (its globs let `*` cross
// dots), so this is a genuinely different implementation: the transport
// carries everything, the bus filters exactly.

export const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

type Client = ReturnType<typeof createClient>

export class RedisBus implements Bus {
  readonly kind = 'redis'
  /** Deliveries whose `deliver` threw; a user's bus would log them. */
  readonly failures: unknown[] = []
  readonly #channel: string
  readonly #publisher: Client
  readonly #subscriber: Client
  #bound = new TopicIndex<true>()
  #state: BusState = 'connecting'

  /** Every bus made with the same `channel` is one instance of the same app. */
  constructor (channel: string, url = redisUrl) {
    this.#channel = channel
    this.#publisher = createClient({ url })
    this.#subscriber = this.#publisher.duplicate()
    for (const client of [this.#publisher, this.#subscriber]) client.on('error', () => { if (this.#state !== 'closed') this.#state = 'down' })
  }

  async start (deliver: Deliver): Promise<void> {
    await Promise.all([this.#publisher.connect(), this.#subscriber.connect()])
    await this.#subscriber.subscribe(this.#channel, (raw: Buffer) => this.#receive(raw, deliver), true)
    this.#state = 'up'
  }

  async publish (message: BusMessage): Promise<void> {
    if (this.#state === 'closed') throw new ClosedError()
    const head = Buffer.from(JSON.stringify({ id: message.id, topic: message.topic, time: message.time }) + '\n')
    // Commands on one connection run in order, and Redis fans a PUBLISH out in order: the contract's ordering.
    await this.#publisher.publish(this.#channel, Buffer.concat([head, message.payload]))
  }

  async bind (pattern: string): Promise<void> {
    if (this.#state === 'closed') throw new ClosedError()
    // The subscription to the channel exists since start: routing is in place as soon as the filter holds the pattern.
    this.#bound.add(pattern, true)
  }

  async unbind (pattern: string): Promise<void> {
    this.#bound.remove(pattern, true)
  }

  health (): BusHealth {
    return { kind: this.kind, state: this.#state, buffered: 0, unconfirmed: 0 }
  }

  async close (): Promise<void> {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    await Promise.all([this.#publisher, this.#subscriber].map((client) => client.isOpen ? client.close() : undefined))
  }

  #receive (raw: Buffer, deliver: Deliver): void {
    if (this.#state === 'closed') return
    const split = raw.indexOf(10)
    const head = JSON.parse(raw.subarray(0, split).toString('utf8')) as Omit<BusMessage, 'payload'>
    if (!this.#bound.matches(head.topic)) return
    try {
      deliver({ ...head, payload: raw.subarray(split + 1) })
    } catch (error) {
      this.failures.push(error)
    }
  }
}

/** A factory of buses sharing one fresh channel: the instances of one app. */
export function redisBusFactory (): () => RedisBus {
  const channel = `evsock-test-${randomUUID()}`
  return () => new RedisBus(channel)
}

/** True when Redis answers; otherwise fails under CI=true and skips, loudly, elsewhere (as requireBroker does). */
export async function requireRedis (t: { fail: (message: string) => void, comment: (message: string) => void, plan: (n: number, why: string) => void }): Promise<boolean> {
  const client = createClient({ url: redisUrl, socket: { connectTimeout: 1000, reconnectStrategy: false } })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return true
  } catch (error) {
    const message = `REDIS NOT REACHABLE at ${redisUrl} (${(error as Error).message}) — ${process.env.CI === 'true' ? 'failing (CI=true)' : 'skipping redis tests'}`
    if (process.env.CI === 'true') t.fail(message)
    else {
      t.comment(message)
      t.plan(0, message)
    }
    return false
  } finally {
    if (client.isOpen) await client.close()
  }
}
