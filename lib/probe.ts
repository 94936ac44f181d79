import { randomBytes, randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { CONTROL_PREFIX } from './topics.js'
import type { Bus, BusMessage } from './bus/types.js'
import type { EventSocketHealth } from './hub.js'

// Readiness that proves delivery (`health({ probe: true })`). A bus can look
// up (its connections open) while nothing reaches this instance any more: a
// binding removed behind its back, a consumer stalled, a publishing
// connection the broker blocks. The probe sends a control message through
// the bus, on a routing key only this instance binds, and waits for its own
// consumer to hand it back. Clients never see it: hub.ts sets every
// `$evsock.` message aside before matching, and replays skip them.

/** What `health({ probe: true })` resolves with. */
export interface EventSocketReadiness extends EventSocketHealth {
  /** 'ok' once the probe came back within `probeTimeoutMs`; 'down' otherwise. */
  status: 'ok' | 'down'
  /** Why the instance is not ready; absent when `status` is 'ok'. */
  reason?: string
  /** Milliseconds from publishing the probe to its delivery back here; absent when it did not come back. */
  probeMs?: number
}

export interface DeliveryProbeOptions {
  bus: Bus
  log: FastifyBaseLogger
  /** How long publishing the probe and its delivery back may take together. */
  timeoutMs: number
  /** The cheap health (liveness) the readiness extends. */
  health: () => EventSocketHealth
  /** Shutdown has begun: a balancer must stop sending clients here. */
  stopping: () => boolean
}

const SHUTTING_DOWN = 'shutting down'

/**
 * Every instance's probe key starts so. A binding as wide as a client's `#`
 * brings the other instances' probes in too: the hub drops those quietly.
 */
export const PROBE_PREFIX = `${CONTROL_PREFIX}probe.`

export class DeliveryProbe {
  /** The control key only this instance binds, so that no other instance is sent its probes. */
  readonly key = `${PROBE_PREFIX}${randomBytes(8).toString('hex')}`
  readonly #options: DeliveryProbeOptions
  #inFlight: Promise<EventSocketReadiness> | undefined
  /** The probe awaited now: its message id, and what its delivery settles. */
  #awaited: { id: string, arrived: () => void } | undefined
  /** The last outcome, so that only a change is logged (a balancer asks every few seconds). */
  #lastReason: string | undefined

  constructor (options: DeliveryProbeOptions) {
    this.#options = options
  }

  /** Runs a probe, or joins the one in flight: concurrent readiness checks cost one round trip. */
  check (): Promise<EventSocketReadiness> {
    this.#inFlight ??= this.#run().finally(() => { this.#inFlight = undefined })
    return this.#inFlight
  }

  /** The hub's handler for messages on `key`; a late probe (one that timed out) is ignored. */
  readonly received = (message: BusMessage): void => {
    if (this.#awaited?.id === message.id) this.#awaited.arrived()
  }

  async #run (): Promise<EventSocketReadiness> {
    const health = this.#options.health()
    let result = this.#options.stopping()
      ? { reason: SHUTTING_DOWN }
      : health.broker.state !== 'up'
        // Not published: during an outage it would only take a slot of the outage buffer.
        ? { reason: `broker ${health.broker.state}${health.broker.lastError === undefined ? '' : `: ${health.broker.lastError}`}` }
        : await this.#roundTrip()
    // Shutdown began while the probe travelled: the checks that joined it meanwhile must not hear 'ok'.
    if (this.#options.stopping()) result = { reason: SHUTTING_DOWN }
    this.#report(result.reason)
    return result.reason === undefined
      ? { ...this.#options.health(), status: 'ok', probeMs: result.probeMs }
      : { ...this.#options.health(), status: 'down', reason: result.reason }
  }

  /** Publishes one probe and waits for it to come back; resolves with the time it took, or why it did not. */
  async #roundTrip (): Promise<{ probeMs?: number, reason?: string }> {
    const { bus, timeoutMs } = this.#options
    const message: BusMessage = { id: randomUUID(), topic: this.key, time: Date.now(), payload: Buffer.from('{}') }
    const started = performance.now()
    let confirmed = false
    let timer: NodeJS.Timeout | undefined
    const arrived = new Promise<void>((resolve) => { this.#awaited = { id: message.id, arrived: resolve } })
    // Inside a promise: a bus of the app's own that throws rather than rejects still gives a 'down'.
    const published = new Promise<void>((resolve) => { resolve(bus.publish(message)) }).then(() => { confirmed = true })
    const expired = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(confirmed
        ? `the probe was published but did not come back within ${timeoutMs} ms (stalled consumer or lost binding)`
        : `the bus did not confirm the probe within ${timeoutMs} ms (blocked or stalled publishing)`), timeoutMs)
    })
    const outcome = Promise.all([published, arrived]).then(() => undefined, (error: Error) => `publishing the probe failed: ${error.message}`)
    try {
      const reason = await Promise.race([outcome, expired])
      return reason === undefined ? { probeMs: Math.round(performance.now() - started) } : { reason }
    } finally {
      clearTimeout(timer)
      this.#awaited = undefined
    }
  }

  #report (reason: string | undefined): void {
    const previous = this.#lastReason
    this.#lastReason = reason
    if (reason === previous) return
    if (reason !== undefined) this.#options.log.warn({ reason }, 'event socket: readiness probe failed; not ready')
    else if (previous !== undefined) this.#options.log.info('event socket: readiness probe succeeded again; ready')
  }
}
