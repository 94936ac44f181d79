import type { ConfirmChannel } from 'amqplib'
import { BrokerUnavailableError, ClosedError, PublishNackedError } from '../errors.js'
import { publishOptions } from './amqp-message.js'
import type { BusMessage } from './types.js'

// Publishing with confirms across connection loss. A publish is settled
// exactly once: resolved on the broker's ack, rejected on its nack, on the
// loss of the channel before the confirm, on its deadline, or on close.
// It is never resolved without a confirm.

interface Outbound {
  message: BusMessage
  resolve: () => void
  reject: (error: Error) => void
  timer: NodeJS.Timeout
  settled: boolean
}

export interface PublisherOptions {
  exchange: string
  /** Deadline of one publish from the call to the confirm, buffering included. */
  timeoutMs: number
  /** Publishes waiting for a usable channel; past it `publish` rejects at once. */
  maxBuffered: number
}

export class ConfirmPublisher {
  #channel: ConfirmChannel | undefined
  // false after amqplib asked us to stop writing; publishes then wait in the buffer until 'drain'
  #writable = true
  // in call order, so that the publisher's order survives an outage
  readonly #buffer: Outbound[] = []
  readonly #inFlight = new Set<Outbound>()
  #accepting = true
  #drained: (() => void) | undefined
  readonly #options: PublisherOptions

  constructor (options: PublisherOptions) {
    this.#options = options
  }

  get buffered (): number {
    return this.#buffer.length
  }

  get unconfirmed (): number {
    return this.#inFlight.size
  }

  publish (message: BusMessage): Promise<void> {
    if (!this.#accepting) return Promise.reject(new ClosedError())
    const sendNow = this.#channel !== undefined && this.#writable && this.#buffer.length === 0
    if (!sendNow && this.#buffer.length >= this.#options.maxBuffered) {
      return Promise.reject(new BrokerUnavailableError(`${this.#buffer.length} publishes already wait for the broker`))
    }
    return new Promise<void>((resolve, reject) => {
      const outbound: Outbound = { message, resolve, reject, settled: false, timer: setTimeout(() => this.#expire(outbound), this.#options.timeoutMs) }
      if (sendNow) this.#send(outbound)
      else this.#buffer.push(outbound)
    })
  }

  /** Starts publishing on a fresh channel of a new connection; sends what waited meanwhile. */
  attach (channel: ConfirmChannel): void {
    this.#channel = channel
    this.#writable = true
    // Runs before amqplib's own 'close' listener, which fails the pending confirm
    // callbacks with an error that looks like a nack; the loss must win.
    channel.prependListener('close', () => this.detach(channel))
    channel.on('drain', () => {
      if (this.#channel !== channel) return
      this.#writable = true
      this.#flush()
    })
    this.#flush()
  }

  /** The channel is gone: publishes sent on it without a confirm are rejected (the event may or may not have been routed). */
  detach (channel: ConfirmChannel): void {
    if (this.#channel !== channel) return
    this.#channel = undefined
    for (const outbound of this.#inFlight) {
      this.#settle(outbound, new BrokerUnavailableError('the connection was lost before the broker confirmed the event'))
    }
  }

  /** Stops accepting, fails what is buffered with `error`, and waits for the confirms of what is in flight (each bounded by its deadline). */
  async close (error: Error = new ClosedError()): Promise<void> {
    this.#accepting = false
    for (const outbound of this.#buffer.splice(0)) this.#settle(outbound, error)
    if (this.#inFlight.size > 0) await new Promise<void>((resolve) => { this.#drained = resolve })
  }

  #flush (): void {
    while (this.#channel !== undefined && this.#writable && this.#buffer.length > 0) {
      this.#send(this.#buffer.shift() as Outbound)
    }
  }

  #send (outbound: Outbound): void {
    const channel = this.#channel as ConfirmChannel
    const { message } = outbound
    this.#inFlight.add(outbound)
    try {
      this.#writable = channel.publish(this.#options.exchange, message.topic, message.payload, publishOptions(message), (error: unknown) => {
        this.#settle(outbound, error == null ? undefined : new PublishNackedError())
        this.#resumeIfAllConfirmed(channel)
      })
    } catch (error) {
      // amqplib throws when the channel closed a moment ago and its 'close' event is still queued
      this.#settle(outbound, new BrokerUnavailableError((error as Error).message))
    }
  }

  /**
   * The broker confirmed everything sent on `channel`, so amqplib's buffer for
   * it is empty whether or not it said 'drain'. A missing 'drain' has been
   * reported (amqplib issue 398); waiting for it then would hold every later
   * publish in the buffer until it filled and publishes were refused, on a
   * connection that is fine.
   */
  #resumeIfAllConfirmed (channel: ConfirmChannel): void {
    if (this.#writable || this.#channel !== channel || this.#inFlight.size > 0) return
    this.#writable = true
    this.#flush()
  }

  #expire (outbound: Outbound): void {
    const index = this.#buffer.indexOf(outbound)
    if (index !== -1) this.#buffer.splice(index, 1)
    this.#settle(outbound, new BrokerUnavailableError(`no confirm from the broker within ${this.#options.timeoutMs} ms`))
  }

  #settle (outbound: Outbound, error: Error | undefined): void {
    if (outbound.settled) return
    outbound.settled = true
    clearTimeout(outbound.timer)
    this.#inFlight.delete(outbound)
    if (error === undefined) outbound.resolve()
    else outbound.reject(error)
    if (this.#inFlight.size === 0) this.#drained?.()
  }
}
