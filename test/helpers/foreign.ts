import { randomUUID } from 'node:crypto'
import { connect, type Options } from 'amqplib'
import { brokerUrl } from './broker.js'

// Messages put on the exchange by a producer that is not this plugin.

export interface Foreign {
  what: string
  routingKey: string
  body: Buffer
  /** Publish properties; `messageId` defaults to a fresh UUID (set it to undefined to leave it out). */
  properties?: Options.Publish
}

/** Publishes raw AMQP messages straight to the exchange, as a producer that is not this plugin would, and waits for the broker's confirms. */
export async function publishForeign (exchange: string, messages: Foreign[]): Promise<void> {
  const connection = await connect(brokerUrl)
  try {
    const channel = await connection.createConfirmChannel()
    for (const { routingKey, body, properties } of messages) {
      channel.publish(exchange, routingKey, body, { messageId: randomUUID(), ...properties })
    }
    await channel.waitForConfirms()
  } finally {
    await connection.close()
  }
}
