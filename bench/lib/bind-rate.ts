// How fast one node makes and removes bindings for the plugin: the keys its
// sockets subscribe to, bound through the plugin's own Bindings
// (lib/bus/amqp-bindings.ts: one RPC at a time, in order, each awaited, as an
// instance does). A reconnect storm, an instance's clients landing on the
// others at once, costs one bind per distinct pattern they bring.
import { randomBytes } from 'node:crypto'
import { connect } from 'amqplib'
import { Bindings } from '../../lib/bus/amqp-bindings.js'
import { brokerCpu, brokerCpuBetween } from './broker-cpu.js'
import { BENCH_EXCHANGE, portOf } from './config.js'
import { declare, type IngestTarget } from './ingest.js'

export interface BindRate {
  /** Bindings made per second, and removed per second. */
  binds: number
  unbinds: number
  /** The nodes' CPU per binding made and removed, added up, µs; undefined when one is not a local process. */
  brokerPerBinding: number | undefined
}

/** Binds `count` keys (`bench.user.<i>`, one per user as with per-user topics) to one queue of `target`'s kind, then unbinds them. */
export async function bindRate (target: Pick<IngestTarget, 'url' | 'kind' | 'nodes'>, count: number): Promise<BindRate> {
  const connection = await connect(target.url)
  connection.on('error', () => undefined)
  const exchange = `${BENCH_EXCHANGE}.bind.${randomBytes(4).toString('hex')}`
  const queue = `${exchange}.${target.kind}`
  const channel = await connection.createChannel()
  const ports = target.nodes.map(portOf)
  try {
    await channel.assertExchange(exchange, 'topic', { durable: true })
    await declare(channel, queue, target)
    const bindings = new Bindings(exchange, queue, 60_000)
    await bindings.attach(channel)
    const keys = Array.from({ length: count }, (_, i) => `bench.user.${i}`)
    const began = { at: performance.now(), broker: brokerCpu(ports) }
    // All asked at once, as a burst of subscriptions does; Bindings sends them one at a time.
    await Promise.all(keys.map((key) => bindings.bind(key)))
    const bound = performance.now()
    await Promise.all(keys.map((key) => bindings.unbind(key)))
    const ended = { at: performance.now(), broker: brokerCpu(ports) }
    const broker = brokerCpuBetween(began.broker, ended.broker)
    return {
      binds: count / (bound - began.at) * 1000,
      unbinds: count / (ended.at - bound) * 1000,
      brokerPerBinding: broker === undefined ? undefined : broker / count
    }
  } finally {
    await channel.deleteQueue(queue).catch(() => undefined)
    await channel.deleteExchange(exchange).catch(() => undefined)
    await connection.close().catch(() => undefined)
  }
}
