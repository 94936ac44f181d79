// What one RabbitMQ node accepts: events/s published with confirms through
// the plugin's own publisher (lib/bus/amqp-publisher.ts, its message
// properties and confirm handling) into one queue of the kind the plugin
// declares: its instance queue (classic, or quorum on a cluster) or its
// history stream, bound '#' to an exchange of its own. Nobody consumes: the
// figure is the broker's ingest (routing, storing, replicating, confirming),
// which bounds the rate of events whatever the fan-out after it.
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { connect, type Channel } from 'amqplib'
import { ConfirmPublisher } from '../../lib/bus/amqp-publisher.js'
import { declareInstanceQueue } from '../../lib/bus/amqp-bindings.js'
import { streamArguments } from '../../lib/bus/amqp-stream.js'
import { resolveOptions } from '../../lib/options.js'
import type { BusMessage } from '../../lib/bus/types.js'
import { brokerCpu, brokerCpuBetween } from './broker-cpu.js'
import { BENCH_EXCHANGE, portOf } from './config.js'
import { eventData } from './payload.js'

export type QueueKind = 'classic' | 'quorum' | 'stream'

export interface IngestTarget {
  label: string
  /** The node the publisher connects to, whose queue (or stream) leader it declares there. */
  url: string
  kind: QueueKind
  /** Every node that may work for it (a replicated queue's followers too): their CPU is added up. */
  nodes: string[]
}

export interface Ingest {
  /** Events confirmed per second over the window. */
  perSec: number
  /** The nodes' CPU over the window, percent of one core, added up; undefined when one is not a local process. */
  broker: number | undefined
  /** This process's (the publisher's) CPU over the window, percent of one core: near 100, the publisher bounds the rate. */
  publisher: number
  /** Publishes rejected over the whole run (nacked, or no confirm within the deadline); 0 expected. */
  failed: number
}

/** Publishes awaiting their confirm at most, as the bench's plugin peer allows (bench/server/peers/evsock.ts). */
export const INGEST_WINDOW = 2000
const SIZE = 128
const TOPIC = 'bench.ingest'

/** The plugin's resolved options, as a default configuration declares them. */
const resolved = (url: string) => resolveOptions({ broker: { url }, history: true })

/** Declares `queue` as the plugin would for `target`'s kind. */
export async function declare (channel: Channel, queue: string, target: Pick<IngestTarget, 'url' | 'kind'>): Promise<void> {
  const options = resolved(target.url)
  if (target.kind === 'stream') {
    await channel.assertQueue(queue, { durable: true, arguments: streamArguments(options.history!) })
    return
  }
  await declareInstanceQueue(channel, queue, { ...options.broker, queueType: target.kind })
}

/** Publishes with confirms for `warmup` + `seconds` s, keeping INGEST_WINDOW in flight, and reads the rate and the CPU over the last `seconds`. */
export async function ingest (target: IngestTarget, warmup: number, seconds: number): Promise<Ingest> {
  const connection = await connect(target.url)
  // A node stopped meanwhile (the cluster is shared with fault tests) closes the connection with an error: the caller sees the failed publishes, not a crash.
  connection.on('error', () => undefined)
  const exchange = `${BENCH_EXCHANGE}.ingest.${randomBytes(4).toString('hex')}`
  const queue = `${exchange}.${target.kind}`
  const admin = await connection.createChannel()
  try {
    await admin.assertExchange(exchange, 'topic', { durable: true })
    await declare(admin, queue, target)
    await admin.bindQueue(queue, exchange, '#')
    const publisher = new ConfirmPublisher({ exchange, timeoutMs: 30_000, maxBuffered: INGEST_WINDOW })
    publisher.attach(await connection.createConfirmChannel())
    const payload = Buffer.from(JSON.stringify(eventData(SIZE)))
    let confirmed = 0
    let failed = 0
    const run = { running: true }
    let next = 0
    const pump = (): void => {
      while (run.running && publisher.unconfirmed + publisher.buffered < INGEST_WINDOW) {
        const message: BusMessage = { id: `ingest-${next++}`, topic: TOPIC, time: Date.now(), payload }
        publisher.publish(message).then(() => { confirmed++ }, () => { failed++ }).finally(pump)
      }
    }
    pump()
    await sleep(warmup * 1000)
    const ports = target.nodes.map(portOf)
    const before = { at: performance.now(), confirmed, cpu: process.cpuUsage(), broker: brokerCpu(ports) }
    await sleep(seconds * 1000)
    const after = { at: performance.now(), confirmed, cpu: process.cpuUsage(before.cpu), broker: brokerCpu(ports) }
    run.running = false
    await publisher.close()
    const ms = after.at - before.at
    const broker = brokerCpuBetween(before.broker, after.broker)
    return {
      perSec: (after.confirmed - before.confirmed) / ms * 1000,
      broker: broker === undefined ? undefined : broker / ms / 10,
      publisher: (after.cpu.user + after.cpu.system) / ms / 10,
      failed
    }
  } finally {
    await admin.deleteQueue(queue).catch(() => undefined)
    await admin.deleteExchange(exchange).catch(() => undefined)
    await connection.close().catch(() => undefined)
  }
}
