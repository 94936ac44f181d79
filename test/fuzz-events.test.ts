import { randomUUID } from 'node:crypto'
import t from 'tap'
import fc from 'fast-check'
import { brokerOptions, requireBroker } from './helpers/broker.js'
import { watchProcess } from './helpers/process.js'
import { openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'
import { publishForeign, type Foreign } from './helpers/foreign.js'

// Property-based fuzzing of what an event carries: the data given
// to `publish`, and raw messages another producer puts on the exchange. An
// independent oracle below says what each must become (refused with which
// code, dropped, or delivered intact to a JSON and a MessagePack socket);
// the server must agree, and keep streaming to both sockets throughout.

const RUNS = 300
const MAX_EVENT_BYTES = 4096
const MAX_EVENT_DEPTH = 16
const LIMITS = { maxEventBytes: MAX_EVENT_BYTES, maxEventDepth: MAX_EVENT_DEPTH }
const SEED = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED)

// -------------------------------------------------------------------- oracle

/** Nesting of arrays and objects: 0 for a scalar. */
function depthOf (value: unknown): number {
  if (value === null || typeof value !== 'object') return 0
  let deepest = 0
  for (const child of Object.values(value)) deepest = Math.max(deepest, depthOf(child))
  return deepest + 1
}

/** The documented size of an event: its JSON, topic and id, and 64 bytes of frame. */
function sizeOf (topic: string, id: string, json: string): number {
  return Buffer.byteLength(json) + Buffer.byteLength(topic) + Buffer.byteLength(id) + 64
}

type Delivered = { kind: 'delivered', data: unknown }
type PublishVerdict = { kind: 'refused', code: string } | Delivered
type ForeignVerdict = { kind: 'dropped' } | Delivered

/** What README says `publish(topic, data, { id })` does: size is checked first, then depth. */
function publishOracle (topic: string, id: string, data: unknown): PublishVerdict {
  const json = JSON.stringify(data)
  if (sizeOf(topic, id, json) > MAX_EVENT_BYTES) return { kind: 'refused', code: 'FST_EVSOCK_PAYLOAD_TOO_LARGE' }
  const parsed: unknown = JSON.parse(json)
  if (depthOf(parsed) > MAX_EVENT_DEPTH) return { kind: 'refused', code: 'FST_EVSOCK_TOO_DEEP' }
  return { kind: 'delivered', data: parsed }
}

/**
 * What a MessagePack socket reads for `value`: strings are UTF-8 there, so a
 * lone surrogate (valid in JSON text) arrives as U+FFFD; and msgpackr's
 * decoder (the test client's) renames a `__proto__` key to `__proto_`.
 */
function asMsgpackReads (value: unknown): unknown {
  if (typeof value === 'string') return wellFormed(value)
  if (value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map(asMsgpackReads)
  return Object.fromEntries(Object.entries(value).map(([key, child]) => [key === '__proto__' ? '__proto_' : wellFormed(key), asMsgpackReads(child)]))
}

function wellFormed (text: string): string {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
}

/** The data as `client` should read it, as comparable text. */
function seenBy (client: TestClient, data: unknown): string {
  return JSON.stringify(client.format === 'msgpack' ? asMsgpackReads(data) : data)
}

const TOPIC_WORD = /^[A-Za-z0-9_\-:@]+$/

/** What docs/rabbitmq.md says becomes of a foreign message: delivered only when it is an event `publish` could have sent. */
function foreignOracle ({ routingKey, body, properties }: Foreign): ForeignVerdict {
  const id = properties?.messageId
  if (typeof id !== 'string' || id.length === 0 || id.length > 128) return { kind: 'dropped' }
  if (routingKey.length > 255 || !routingKey.split('.').every((word) => TOPIC_WORD.test(word))) return { kind: 'dropped' }
  if (sizeOf(routingKey, id, body.toString('latin1')) > MAX_EVENT_BYTES) return { kind: 'dropped' }
  const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })
  let data: unknown
  try {
    data = JSON.parse(text.decode(body))
  } catch {
    return { kind: 'dropped' }
  }
  return depthOf(data) > MAX_EVENT_DEPTH ? { kind: 'dropped' } : { kind: 'delivered', data }
}

// ---------------------------------------------------------------- generators

/** `depth` levels of arrays or objects around a leaf, each level possibly with siblings. */
const nested = fc.record({
  depth: fc.integer({ min: MAX_EVENT_DEPTH - 3, max: MAX_EVENT_DEPTH + 3 }),
  map: fc.boolean(),
  leaf: fc.jsonValue({ maxDepth: 2 }),
  sibling: fc.option(fc.string({ maxLength: 4 }))
}).map(({ depth, map, leaf, sibling }) => {
  let value: unknown = leaf
  for (let i = 0; i < depth; i++) {
    value = map ? { a: value, ...(sibling === null ? {} : { b: sibling }) } : sibling === null ? [value] : [sibling, value]
  }
  return value
})

/** Strings whose event lands a few bytes either side of maxEventBytes. */
const nearSize = fc.integer({ min: -8, max: 8 }).map((delta) => 'x'.repeat(MAX_EVENT_BYTES - 64 - 'feed.data'.length - 36 - 2 + delta))
const wide = fc.integer({ min: 1, max: 1500 }).map((width) => Array.from({ length: width }, (_, i) => i % 10))
const data: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue(),
  nested,
  nearSize,
  wide,
  fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 100 }),
  fc.string({ unit: 'grapheme', maxLength: 300 })
)

const badWords = ['', 'bad word', 'é', '*', '#', 'a/b', 'x'.repeat(250)]
const routingKey = fc.oneof(
  { arbitrary: fc.constantFrom('feed.a', 'feed.b.c', 'feed.x-1:@'), weight: 3 },
  fc.constantFrom(...badWords).map((word) => `feed.${word}`)
)
const messageId = fc.oneof(
  { arbitrary: fc.uuid(), weight: 4 },
  fc.constantFrom(undefined, '', 'i'.repeat(128), 'i'.repeat(129))
)
const body = fc.oneof(
  { arbitrary: fc.jsonValue().map((value) => Buffer.from(JSON.stringify(value))), weight: 3 },
  nested.map((value) => Buffer.from(JSON.stringify(value))),
  nearSize.map((text) => Buffer.from(JSON.stringify(text))),
  fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
  fc.string({ unit: 'binary', maxLength: 64 }).map((text) => Buffer.from(text)),
  fc.constantFrom('', ' ', '1 2', '{"a":1', '1},"x":{', '\uFEFF1', 'NaN', 'undefined', '"\\ud800"', '[1,]')
    .map((text) => Buffer.from(text)),
  // Valid JSON around bytes that are not UTF-8.
  fc.uint8Array({ minLength: 1, maxLength: 8 }).map((bytes) => Buffer.concat([Buffer.from('"'), Buffer.from(bytes.map((byte) => byte | 0x80)), Buffer.from('"')]))
)
const foreign: fc.Arbitrary<Foreign> = fc.record({ routingKey, body, messageId })
  .map(({ routingKey, body, messageId }) => ({ what: 'fuzzed', routingKey, body, properties: { messageId } }))

// ------------------------------------------------------------------- harness

async function subscribers (t: Parameters<typeof openClient>[0], server: TestServer): Promise<TestClient[]> {
  const clients = [await openClient(t, server, { format: 'json' }), await openClient(t, server, { format: 'msgpack' })]
  for (const client of clients) {
    t.equal((await client.subscribe('feed.#')).op, 'ok')
    client.ackEach()
  }
  return clients
}

t.test(`${RUNS} random event data: publish refuses or delivers exactly as the oracle says, to JSON and MessagePack sockets`, async (t) => {
  const failures = watchProcess(t)
  const server = await startServer(t, LIMITS)
  const clients = await subscribers(t, server)
  const seen = new Map<string, number>()
  await fc.assert(fc.asyncProperty(data, async (value) => {
    const id = randomUUID()
    const expected = publishOracle('feed.data', id, value)
    const kind = expected.kind === 'refused' ? expected.code : expected.kind
    seen.set(kind, (seen.get(kind) ?? 0) + 1)
    if (expected.kind === 'refused') {
      const code = await server.app.publish('feed.data', value, { id }).then(() => 'resolved', (err: { code?: string }) => err.code)
      if (code !== expected.code) throw new Error(`expected ${expected.code}, got ${String(code)}`)
      return
    }
    await server.app.publish('feed.data', value, { id })
    for (const client of clients) {
      const event = await client.next((m) => m.op === 'event' && m.id === id, { timeout: 5000 })
      if (JSON.stringify(event.data) !== seenBy(client, expected.data)) {
        throw new Error(`${client.format} socket got ${JSON.stringify(event.data)?.slice(0, 200)}`)
      }
    }
  }), { numRuns: RUNS, seed: SEED })
  t.comment(`verdicts: ${JSON.stringify(Object.fromEntries(seen))}`)
  for (const kind of ['delivered', 'FST_EVSOCK_PAYLOAD_TOO_LARGE', 'FST_EVSOCK_TOO_DEEP']) t.ok((seen.get(kind) ?? 0) > 0, `some data expected ${kind}`)
  t.same(failures, [], 'nothing escaped to the process')
})

if (await requireBroker(t)) {
  t.test(`${RUNS} random foreign messages on the exchange are dropped or delivered as the oracle says; the stream goes on`, async (t) => {
    const failures = watchProcess(t)
    const broker = brokerOptions(t)
    const server = await startServer(t, { ...LIMITS, broker })
    const clients = await subscribers(t, server)
    const messages = fc.sample(foreign, { numRuns: RUNS, seed: SEED ?? 9 })
    const verdicts = messages.map(foreignOracle)
    await publishForeign(broker.exchange, messages)
    const { id } = await server.app.publish('feed.sentinel', 'sentinel')
    const delivered = verdicts.flatMap((verdict) => verdict.kind === 'delivered' ? [verdict.data] : [])
    for (const client of clients) {
      await client.next((m) => m.op === 'event' && m.id === id, { timeout: 20_000 })
      const got = client.events().slice(0, -1).map((event) => JSON.stringify(event.data))
      t.same(got, delivered.map((data) => seenBy(client, data)), `the ${client.format} socket got exactly the valid messages, in order`)
    }
    const dropped = verdicts.filter((verdict) => verdict.kind === 'dropped').length
    t.ok(dropped > RUNS / 4 && delivered.length > RUNS / 4, `${dropped} dropped, ${delivered.length} delivered`)
    t.equal(server.app.eventSocket.stats().eventsDropped, dropped, 'every dropped message was counted')
    t.same(failures, [], 'nothing escaped to the process')
  })
}
