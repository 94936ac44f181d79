// The RabbitMQ topology of the history runs. Each run gets an exchange of its
// own, so that no stream an earlier run left bound to a shared exchange
// writes every event of a history-off run; and all of it is deleted after.
import { randomBytes } from 'node:crypto'
import { connect } from 'amqplib'
import { AMQP_URL, BENCH_EXCHANGE } from './config.js'

/** What the plugin names its history stream (docs/rabbitmq.md). */
const historyStreamOf = (exchange: string): string => `${exchange}.history`

// The plugin's own stream arguments at the default retention, so that the
// unread stream costs the broker what the plugin's would.
const STREAM_ARGUMENTS = {
  'x-queue-type': 'stream',
  'x-max-age': '86400s',
  'x-max-length-bytes': 1024 * 1024 * 1024,
  'x-stream-max-segment-size-bytes': 128 * 1024 * 1024
}

/**
 * Runs `body` with a fresh exchange name. With `unreadStream`, a stream is
 * bound to the exchange with '#' first and nobody reads it: the broker writes
 * every event to it, which is all that history adds to the live path of a
 * design that reads the stream only to resume.
 */
export async function withExchange<T> (unreadStream: boolean, body: (exchange: string) => Promise<T>): Promise<T> {
  const exchange = `${BENCH_EXCHANGE}.history.${randomBytes(4).toString('hex')}`
  const unread = `${exchange}.unread`
  const connection = await connect(AMQP_URL)
  try {
    const channel = await connection.createChannel()
    if (unreadStream) {
      await channel.assertExchange(exchange, 'topic', { durable: true })
      await channel.assertQueue(unread, { durable: true, arguments: STREAM_ARGUMENTS })
      await channel.bindQueue(unread, exchange, '#')
    }
    try {
      return await body(exchange)
    } finally {
      // Deleting a queue that does not exist is no error in RabbitMQ.
      await channel.deleteQueue(unread)
      await channel.deleteQueue(historyStreamOf(exchange))
      await channel.deleteExchange(exchange)
    }
  } finally {
    await connection.close()
  }
}
