import { randomUUID } from 'node:crypto'
import t from 'tap'
import { connect } from 'amqplib'
import { MemoryBus } from '../lib/bus/memory.js'
import { compilePattern } from '../lib/client/patterns.js'
import { TopicIndex } from '../lib/client/topic-index.js'
import { canonicalPattern, multiWordWildcards, patternProblem, topicProblem } from '../lib/topics.js'
import { brokerUrl, busMessage, requireBroker } from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'
import { canonicalCases, matchCases, MAX_WORDS_UNDER_SEVERAL_HASHES } from './fixtures/topic-cases.js'

// One table (test/fixtures/topic-cases.ts), every matcher: each row is run as
// spelled and in canonical form, which must match the same topics.

const rows = matchCases.flatMap(([pattern, topic, expected]) => {
  const canonical = canonicalPattern(pattern)
  return canonical === pattern ? [{ pattern, topic, expected }] : [{ pattern, topic, expected }, { pattern: canonical, topic, expected }]
})
const patterns = [...new Set(rows.map((row) => row.pattern))]
const topics = [...new Set(rows.map((row) => row.topic))]
const short = (text: string): string => text.length <= 40 ? text : `${text.slice(0, 30)}…${text.slice(-6)} (${text.split('.').length} words)`
const label = (pattern: string, topic: string): string => `${short(pattern)} vs ${short(topic)}`

t.test('the table holds valid patterns and topics, and canonical spellings', async (t) => {
  for (const pattern of patterns) t.equal(patternProblem(pattern), undefined, `pattern ${pattern.slice(0, 40)}`)
  for (const topic of topics) t.equal(topicProblem(topic), undefined, `topic ${topic.slice(0, 40)}`)
  for (const [pattern, canonical] of canonicalCases) t.equal(canonicalPattern(pattern), canonical, `canonical form of ${pattern}`)
})

t.test('the server index, one pattern at a time', async (t) => {
  for (const { pattern, topic, expected } of rows) {
    const index = new TopicIndex<string>()
    index.add(pattern, pattern)
    t.equal(index.matches(topic), expected, label(pattern, topic))
  }
})

t.test('the server index holding every pattern of the table at once', async (t) => {
  // One shared trie: the memo of one pattern's walk must not leak into another's.
  const index = new TopicIndex<string>()
  for (const pattern of patterns) index.add(pattern, pattern)
  for (const topic of topics) {
    const seen: string[] = []
    index.match(topic, (pattern) => seen.push(pattern))
    for (const { pattern, expected } of rows.filter((row) => row.topic === topic)) t.equal(seen.includes(pattern), expected, label(pattern, topic))
    t.equal(new Set(seen).size, seen.length, `each pattern visited once for ${topic.slice(0, 40)}`)
  }
})

t.test("the client's matcher", async (t) => {
  for (const { pattern, topic, expected } of rows) t.equal(compilePattern(pattern)(topic), expected, label(pattern, topic))
})

t.test('the in-process bus routes through its bindings', async (t) => {
  for (const pattern of patterns) {
    const bus = new MemoryBus()
    const delivered: string[] = []
    await bus.start((message) => { delivered.push(message.topic) })
    await bus.bind(pattern)
    for (const topic of topics) await bus.publish(busMessage(topic))
    for (const { topic, expected } of rows.filter((row) => row.pattern === pattern)) t.equal(delivered.includes(topic), expected, label(pattern, topic))
    await bus.close()
  }
})

t.test("RabbitMQ's topic exchange agrees with the table and with the index on every pair", async (t) => {
  if (!await requireBroker(t)) return
  const connection = await connect(brokerUrl)
  t.teardown(() => connection.close())
  const channel = await connection.createConfirmChannel()
  // A topic exchange matches every topic published to it against every
  // binding, so patterns with several `#` get an exchange of their own, which
  // is sent only the topics short enough for RabbitMQ to answer in time.
  const severalHashes = (pattern: string): boolean => multiWordWildcards(pattern) > 1
  const shortTopics = topics.filter((topic) => topic.split('.').length <= MAX_WORDS_UNDER_SEVERAL_HASHES)
  const groups = [
    { patterns: patterns.filter((pattern) => !severalHashes(pattern)), topics },
    { patterns: patterns.filter(severalHashes), topics: shortTopics }
  ]
  const received = new Map<string, Set<string>>()
  const sentTo = new Map<string, string[]>()
  // Comes last, bound to every queue: a queue that has it has had everything.
  const sentinel = `sentinel-${randomUUID()}`
  for (const group of groups) {
    // Exclusive queues go with the connection, and the auto-delete exchange with its last binding.
    const exchange = `evsock.test.cases.${randomUUID()}`
    await channel.assertExchange(exchange, 'topic', { durable: false, autoDelete: true })
    for (const pattern of group.patterns) {
      const { queue } = await channel.assertQueue('', { exclusive: true, autoDelete: true })
      await channel.bindQueue(queue, exchange, pattern)
      await channel.bindQueue(queue, exchange, sentinel)
      const got = new Set<string>()
      received.set(pattern, got)
      sentTo.set(pattern, group.topics)
      await channel.consume(queue, (message) => { if (message !== null) got.add(message.content.toString()) }, { noAck: true })
    }
    for (const topic of group.topics) channel.publish(exchange, topic, Buffer.from(topic))
    channel.publish(exchange, sentinel, Buffer.from(sentinel))
  }
  await channel.waitForConfirms()
  await waitFor(() => [...received.values()].every((got) => got.has(sentinel)), { what: 'every queue to receive the sentinel', timeoutMs: 30_000 })

  for (const { pattern, topic } of rows) t.ok(sentTo.get(pattern)!.includes(topic), `RabbitMQ was asked ${label(pattern, topic)}`)
  for (const { pattern, topic, expected } of rows) t.equal(received.get(pattern)!.has(topic), expected, `RabbitMQ: ${label(pattern, topic)}`)
  // Beyond the rows: every pattern of the table against every topic of it.
  const disagreements: string[] = []
  for (const pattern of patterns) {
    const ours = compilePattern(pattern)
    for (const topic of sentTo.get(pattern)!) {
      const broker = received.get(pattern)!.has(topic)
      if (ours(topic) !== broker) disagreements.push(`${label(pattern, topic)}: RabbitMQ ${String(broker)}`)
    }
  }
  t.same(disagreements, [], `the index agrees with RabbitMQ on all ${[...sentTo.values()].reduce((sum, sent) => sum + sent.length, 0)} pairs`)
})
