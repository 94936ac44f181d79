// The RabbitMQ topology of the history runs. Each run gets an exchange of its
// own, so that no stream an earlier run left bound to a shared exchange
// writes every event of a history-off run; and all of it is deleted after.
import { randomBytes } from 'node:crypto'
import { connect, type Channel, type ChannelModel } from 'amqplib'
import { resolveOptions } from '../../lib/options.js'
import { streamArguments } from '../../lib/bus/amqp-stream.js'
import { AMQP_URL, BENCH_EXCHANGE } from './config.js'

/** What the plugin names its history stream (docs/rabbitmq.md). */
const historyStreamOf = (exchange: string): string => `${exchange}.history`

// The plugin's own stream arguments at the default retention, so that the
// unread stream costs the broker what the plugin's would.
const STREAM_ARGUMENTS = streamArguments(resolveOptions({ broker: { url: AMQP_URL }, history: true }).history!)

/**
 * A fresh exchange name, deleted with what the plugin or the bench bound to
 * it. With `unreadStream`, a stream is bound to the exchange with '#' first
 * and nobody reads it: the broker writes every event to it, which is all that
 * history adds to the live path of a design that reads the stream only to
 * resume.
 */
export class BenchExchange {
  readonly name = `${BENCH_EXCHANGE}.history.${randomBytes(4).toString('hex')}`
  readonly #unread = `${this.name}.unread`
  readonly #connection: ChannelModel
  readonly #channel: Channel

  private constructor (connection: ChannelModel, channel: Channel) {
    this.#connection = connection
    this.#channel = channel
  }

  static async create (unreadStream: boolean): Promise<BenchExchange> {
    const connection = await connect(AMQP_URL)
    const exchange = new BenchExchange(connection, await connection.createChannel())
    if (unreadStream) {
      const channel = exchange.#channel
      await channel.assertExchange(exchange.name, 'topic', { durable: true })
      await channel.assertQueue(exchange.#unread, { durable: true, arguments: STREAM_ARGUMENTS })
      await channel.bindQueue(exchange.#unread, exchange.name, '#')
    }
    return exchange
  }

  /** After the servers using it have stopped. */
  async delete (): Promise<void> {
    try {
      // Deleting a queue that does not exist is no error in RabbitMQ.
      await this.#channel.deleteQueue(this.#unread)
      await this.#channel.deleteQueue(historyStreamOf(this.name))
      await this.#channel.deleteExchange(this.name)
    } finally {
      await this.#connection.close()
    }
  }
}

/** Runs `body` with a fresh exchange (see BenchExchange), deleted afterwards. */
export async function withExchange<T> (unreadStream: boolean, body: (exchange: string) => Promise<T>): Promise<T> {
  const exchange = await BenchExchange.create(unreadStream)
  try {
    return await body(exchange.name)
  } finally {
    await exchange.delete()
  }
}
