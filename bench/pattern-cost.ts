// `npx tsx bench/pattern-cost.ts [pattern...]`: what one topic-exchange binding
// costs RabbitMQ per publish, for the wildcard shapes docs/security.md quotes.
// Each pattern is bound alone to a fresh exchange; a publish to a topic of 128
// one-letter words (255 bytes, the longest topic) is timed to its confirm,
// against the same publish with a plain binding. Stops a shape early once a
// publish passes 500 ms, so that it never stalls the broker for long.
import { randomUUID } from 'node:crypto'
import { connect } from 'amqplib'

const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672'
const topic = Array.from({ length: 128 }, () => 'a').join('.')

function alternate (hashes: number, between: string): string {
  return Array.from({ length: hashes }, () => `#.${between}`).join('.')
}

const shapes: Array<[string, (k: number) => string]> = [
  ['#.a repeated (k #)', (k) => alternate(k, 'a')],
  ['#.*.a repeated (k #, k *)', (k) => alternate(k, '*.a')],
  ['#.b repeated, never matches (k #)', (k) => alternate(k, 'b')],
  ['consecutive # (not canonical)', (k) => Array.from({ length: k }, () => '#').join('.')]
]

const connection = await connect(url)
const channel = await connection.createConfirmChannel()

async function cost (pattern: string, rounds = 5): Promise<number> {
  const exchange = `evsock.bench.${randomUUID()}`
  await channel.assertExchange(exchange, 'topic', { durable: false, autoDelete: false })
  const { queue } = await channel.assertQueue('', { exclusive: true, arguments: { 'x-max-length': 1 } })
  await channel.bindQueue(queue, exchange, pattern)
  let best = Infinity
  try {
    for (let i = 0; i < rounds; i++) {
      const began = performance.now()
      channel.publish(exchange, topic, Buffer.from('x'))
      await channel.waitForConfirms()
      const ms = performance.now() - began
      best = Math.min(best, ms)
      if (ms > 500) break
    }
  } finally {
    await channel.deleteQueue(queue)
    await channel.deleteExchange(exchange)
  }
  return best
}

const plain = await cost('a.a.a')
console.log(`plain binding: ${plain.toFixed(2)} ms per publish (best of 5)`)
const only = process.argv.slice(2)
if (only.length > 0) {
  for (const pattern of only) console.log(`${pattern}: ${(await cost(pattern)).toFixed(2)} ms`)
} else {
  for (const [name, shape] of shapes) {
    for (let k = 1; k <= 12; k++) {
      const ms = await cost(shape(k))
      console.log(`${name}, k=${k}: ${ms.toFixed(2)} ms`)
      if (ms > 200) break
    }
  }
}
await connection.close()
