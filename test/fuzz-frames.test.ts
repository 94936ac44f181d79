import t from 'tap'
import fc from 'fast-check'
import { Packr, Unpackr } from 'msgpackr'
import { openClient, startServer, type Message, type TestClient, type TestServer } from './helpers/server.js'
import { watchProcess } from './helpers/process.js'

// Property-based fuzzing of inbound frames. Every random frame goes
// to a fuzzing socket followed by a probe request; the answers between two
// probe answers belong to that frame and must be exactly what docs/protocol.md
// section 2 prescribes, as computed by the independent oracle below. The
// rate limit and the bad-frame limit are raised so the fuzzing socket stays
// open; the closes they cause are tested at the end with the defaults.

const RUNS = 3000
const FUZZ_LIMITS = { rateLimit: 1_000_000, rateBurst: 1_000_000, maxBadFrames: 1_000_000 }
const MAX_MESSAGE_BYTES = 16384
const USER = 'fz'
const MAX_SUBSCRIPTIONS = 100

// The decoder options of the plugin (lib/codec.ts): the oracle must read a
// MessagePack frame the way the server does before judging it.
const packr = new Packr({ useRecords: false, variableMapSize: true })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' })

type Format = 'json' | 'msgpack'
interface Frame { data: string | Buffer, binary: boolean }
type Expected = { kind: 'none' } | { kind: 'ok', id: number } | { kind: 'error', code: string, id: number | undefined }

// ---------------------------------------------------------------- generators

const validTopics = ['user.fz', 'user.fz.inbox', 'user.fz.#', 'user.fz.*.x', 'orders.*', '#', 'a.b.c', 'user.other.x']
const badTopics = ['', '.', 'a..b', 'a.b*', 'with space', 'é', 'x'.repeat(256), '*#', 'user.fz.']
const opNames = ['sub', 'unsub', 'ack', 'auth', 'SUB', 'hello', 'event', 'ok', 'error', '__proto__', 'constructor', 'toString']
const keyNames = ['op', 'id', 'topic', 'seq', 'token', 'since', '__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'valueOf']

// Pattern shapes: wildcard runs, long patterns, patterns of exactly
// 255 bytes and one byte over, under the fuzzer's own prefix so that most pass
// authorization and reach the canonical form and the # cap.
const patternWord = fc.constantFrom('*', '#', '#', 'a', 'b', 'x-1')
const underOwn = (words: string[]): string => [`user.${USER}`, ...words].join('.')
const toLength = (pattern: string, bytes: number): string => {
  const cut = pattern.padEnd(bytes, '.a').slice(0, bytes)
  return cut.endsWith('.') ? `${cut.slice(0, -1)}z` : cut
}
const patternShapes = fc.oneof(
  fc.array(patternWord, { minLength: 1, maxLength: 12 }).map(underOwn),
  fc.array(fc.constantFrom('*', '#'), { minLength: 1, maxLength: 60 }).map(underOwn),
  fc.array(patternWord, { minLength: 60, maxLength: 130 }).map(underOwn),
  fc.tuple(fc.array(patternWord, { minLength: 1, maxLength: 130 }), fc.constantFrom(255, 256)).map(([words, bytes]) => toLength(underOwn(words), bytes))
)

const hugeNumber = fc.constantFrom(
  0, -0, 1, -1, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, 2 ** 63, 2 ** 64, -(2 ** 63),
  1e308, -1e308, 5e-324, 0.5, 1.5
)
const anyField: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(...opNames),
  fc.constantFrom(...validTopics, ...badTopics),
  fc.nat(),
  fc.integer(),
  hugeNumber,
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.string({ maxLength: 40 }),
  fc.string({ minLength: 1000, maxLength: 3000 }),
  fc.constant('t'.repeat(8193)),
  fc.jsonValue({ maxDepth: 3 }),
  fc.constant({ __proto__: null, polluted: 'yes' }),
  fc.dictionary(fc.constantFrom('__proto__', 'constructor', 'prototype', 'polluted'), fc.jsonValue({ maxDepth: 2 }))
)

/** Objects built entry by entry, so that `__proto__` and `constructor` are real keys of the encoded map. */
const entries = fc.array(fc.tuple(fc.oneof(fc.constantFrom(...keyNames), fc.string({ maxLength: 8 })), anyField), { maxLength: 8 })

/** A request with a known op and some field of a wrong type, or a valid one. */
/** Mostly the right type, sometimes anything: valid requests and valid ops with one ill-typed field. */
const mostly = <T>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof({ arbitrary: valid, weight: 4 }, { arbitrary: anyField, weight: 1 })
const requestLike = fc.record({
  op: fc.constantFrom('sub', 'unsub', 'ack', 'auth'),
  id: mostly(fc.nat(1_000_000)),
  topic: mostly(fc.oneof(fc.constantFrom(...validTopics, ...badTopics), patternShapes)),
  seq: mostly(fc.nat(3)),
  token: mostly(fc.string({ minLength: 1, maxLength: 300 })),
  since: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 10 }), anyField)
}, { requiredKeys: ['op'] }).map((fields) => Object.entries(fields))

type Shape =
  | { kind: 'bytes', bytes: Uint8Array }
  | { kind: 'text', text: string }
  | { kind: 'value', value: unknown }
  | { kind: 'entries', entries: Array<[string, unknown]>, nestProto: boolean }
  | { kind: 'deep', depth: number, map: boolean }

const shape: fc.Arbitrary<Shape> = fc.oneof(
  fc.uint8Array({ maxLength: 256 }).map((bytes) => ({ kind: 'bytes' as const, bytes })),
  fc.uint8Array({ minLength: 1000, maxLength: MAX_MESSAGE_BYTES }).map((bytes) => ({ kind: 'bytes' as const, bytes })),
  fc.string({ unit: 'binary', maxLength: 200 }).map((text) => ({ kind: 'text' as const, text })),
  fc.constantFrom('1e400', '-1e400', '123456789012345678901234567890', '{"op":"ack","seq":1e400}', '{"op":"sub","id":1e21,"topic":"a"}',
    '{"op":"ack","seq":9007199254740993}', '{"op":"sub","id":-0,"topic":"user.fz"}', '', ' ', '{}', '{"op":null}', '"sub"', 'true')
    .map((text) => ({ kind: 'text' as const, text })),
  fc.jsonValue().map((value) => ({ kind: 'value' as const, value })),
  entries.map((list) => ({ kind: 'entries' as const, entries: list, nestProto: false })),
  { arbitrary: requestLike.map((list) => ({ kind: 'entries' as const, entries: list, nestProto: false })), weight: 8 },
  requestLike.map((list) => ({ kind: 'entries' as const, entries: list, nestProto: true })),
  fc.oneof(fc.integer({ min: 1, max: 2000 }), fc.integer({ min: 10_000, max: MAX_MESSAGE_BYTES - 10 }))
    .chain((depth) => fc.boolean().map((map) => ({ kind: 'deep' as const, depth: map ? Math.min(depth, 2000) : depth, map })))
)

/** Encodes a shape as one frame of the socket's format. */
function encode (format: Format, s: Shape): Frame {
  switch (s.kind) {
    case 'bytes': {
      const bytes = Buffer.from(s.bytes)
      // On a JSON socket: half as binary frames, half as text (made valid UTF-8; invalid text is a 1007, tested below).
      if (format === 'json' && bytes.length % 2 === 1) return { data: bytes.toString('utf8'), binary: false }
      return { data: bytes, binary: true }
    }
    case 'text': return format === 'json' ? { data: s.text, binary: false } : { data: Buffer.from(s.text), binary: true }
    case 'value': return format === 'json' ? { data: JSON.stringify(s.value), binary: false } : { data: packr.pack(s.value), binary: true }
    case 'entries': {
      const list: Array<[string, unknown]> = s.nestProto ? [['__proto__', Object.fromEntries(s.entries)]] : s.entries
      if (format === 'msgpack') return { data: packr.pack(new Map(list)), binary: true }
      const text = `{${list.map(([key, value]) => `${JSON.stringify(key)}:${JSON.stringify(value) ?? 'null'}`).join(',')}}`
      return { data: text, binary: false }
    }
    case 'deep': {
      if (format === 'json') {
        const open = s.map ? '{"a":' : '['
        const close = s.map ? '}' : ']'
        return { data: open.repeat(s.depth) + 'null' + close.repeat(s.depth), binary: false }
      }
      const level = s.map ? Buffer.from([0x81, 0xa1, 0x61]) : Buffer.from([0x91])
      return { data: Buffer.concat([...Array.from({ length: s.depth }, () => level), Buffer.from([0xc0])]), binary: true }
    }
  }
}

/** Keeps a generated frame only when it fits maxMessageBytes (its close is tested in messages.test.ts). */
function fits (frame: Frame): boolean {
  return Buffer.byteLength(frame.data) <= MAX_MESSAGE_BYTES
}

// -------------------------------------------------------------------- oracle

const TOPIC_WORD = /^[A-Za-z0-9_\-:@]+$/

function isPattern (value: unknown): value is string {
  if (typeof value !== 'string' || value.length === 0 || Buffer.byteLength(value) > 255) return false
  return value.split('.').every((word) => word === '*' || word === '#' || TOPIC_WORD.test(word))
}

/**
 * The canonical form of docs/protocol.md section 3, by rewriting to a fixed
 * point (`#.#` to `#`, `#.*` to `*.#`), independently of lib/topics.ts.
 */
function canonical (pattern: string): string {
  const words = pattern.split('.')
  for (let changed = true; changed;) {
    changed = false
    for (let i = 0; i + 1 < words.length; i++) {
      if (words[i] !== '#') continue
      if (words[i + 1] === '#') words.splice(i + 1, 1)
      else if (words[i + 1] === '*') words.splice(i, 2, '*', '#')
      else continue
      changed = true
    }
  }
  return words.join('.')
}

function isCount (value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

/** What docs/protocol.md section 2 says the server answers to `frame`, given the subscriptions the socket holds. */
function oracle (format: Format, frame: Frame, held: Set<string>): Expected {
  const badRequest = (id?: unknown): Expected => ({ kind: 'error', code: 'BAD_REQUEST', id: isCount(id) ? id : undefined })
  let decoded: unknown
  try {
    if (format === 'json' && frame.binary) return badRequest()
    if (format === 'msgpack' && !frame.binary) return badRequest()
    decoded = format === 'json' ? JSON.parse(String(frame.data)) : unpackr.unpack(frame.data as Buffer)
  } catch {
    return badRequest()
  }
  if (typeof decoded !== 'object' || decoded === null || Array.isArray(decoded)) return badRequest()
  // A message's fields are the keys of the map on the wire, never inherited properties.
  const field = (name: string): unknown => Object.hasOwn(decoded, name) ? (decoded as Record<string, unknown>)[name] : undefined
  const op = field('op')
  if (op === 'ack') {
    const seq = field('seq')
    if (!isCount(seq)) return badRequest()
    // Nothing was ever sent to the fuzzing socket: any seq above 0 acks an event never sent.
    return seq === 0 ? { kind: 'none' } : { kind: 'error', code: 'BAD_ACK', id: undefined }
  }
  const id = field('id')
  if (op !== 'sub' && op !== 'unsub' && op !== 'auth') return badRequest(id)
  if (!isCount(id)) return badRequest()
  if (op === 'auth') {
    const token = field('token')
    if (typeof token !== 'string' || token.length === 0 || token.length > 8192) return badRequest(id)
    return { kind: 'error', code: 'BAD_TOKEN', id }
  }
  const spelled = field('topic')
  if (!isPattern(spelled)) return { kind: 'error', code: typeof spelled === 'string' ? 'BAD_TOPIC' : 'BAD_REQUEST', id }
  const topic = canonical(spelled)
  if (op === 'unsub') {
    held.delete(topic)
    return { kind: 'ok', id }
  }
  const since = field('since')
  if (since !== undefined && typeof since !== 'string') return badRequest(id)
  // maxPatternWildcards, default 1.
  if (topic.split('.').filter((word) => word === '#').length > 1) return { kind: 'error', code: 'BAD_TOPIC', id }
  if (held.has(topic)) return { kind: 'ok', id }
  if (held.size >= MAX_SUBSCRIPTIONS) return { kind: 'error', code: 'TOO_MANY_SUBSCRIPTIONS', id }
  // The default authorize: a plain user may subscribe under user.<own sub> only.
  if (topic !== `user.${USER}` && !topic.startsWith(`user.${USER}.`)) return { kind: 'error', code: 'FORBIDDEN', id }
  held.add(topic)
  return { kind: 'ok', id }
}

// ------------------------------------------------------------------- harness

let probeId = 9_000_000_000_000_000

/** Sends the frame, then a probe; returns the messages the frame got (everything before the probe's answer). */
async function exchange (client: TestClient, frame: Frame): Promise<Message[]> {
  const from = client.messages.length
  client.ws.send(frame.data, { binary: frame.binary })
  const id = ++probeId
  client.send({ op: 'unsub', id, topic: 'probe.x' })
  const probe = await client.next((m) => m.op === 'ok' && m.id === id, { from, timeout: 5000 })
  return client.messages.slice(from, client.messages.indexOf(probe, from))
}

function check (answers: Message[], expected: Expected): string | undefined {
  if (expected.kind === 'none') return answers.length === 0 ? undefined : `expected no answer, got ${JSON.stringify(answers)}`
  if (answers.length !== 1) return `expected one ${expected.kind}, got ${JSON.stringify(answers)}`
  const answer = answers[0]!
  if (answer.op !== expected.kind) return `expected ${JSON.stringify(expected)}, got ${JSON.stringify(answer)}`
  if (answer.id !== expected.id) return `expected id ${String(expected.id)}, got ${JSON.stringify(answer)}`
  if (expected.kind === 'error' && (answer.code !== expected.code || typeof answer.message !== 'string')) {
    return `expected ${expected.code}, got ${JSON.stringify(answer)}`
  }
  return undefined
}

/** A socket that subscribes to the feed and acks everything it gets, as the bundled client does. */
async function wellBehaved (t: Parameters<typeof openClient>[0], server: TestServer): Promise<TestClient> {
  const good = await openClient(t, server, { sub: 'good', role: 'admin' })
  t.equal((await good.subscribe('feed.*')).op, 'ok')
  good.ackEach()
  return good
}

for (const format of ['json', 'msgpack'] as const) {
  t.test(`${RUNS} random frames on a ${format} socket are each answered as docs/protocol.md says`, async (t) => {
    const failures = watchProcess(t)
    const prototypeKeys = Reflect.ownKeys(Object.prototype)
    const server = await startServer(t, { ...FUZZ_LIMITS, maxMessageBytes: MAX_MESSAGE_BYTES, maxSubscriptions: MAX_SUBSCRIPTIONS })
    const fuzzer = await openClient(t, server, { sub: USER, role: 'user', format })
    const good = await wellBehaved(t, server)

    // A steady stream of events for the well-behaved socket while the fuzzing goes on.
    let published = 0
    const publishing = { on: true }
    const publisher = (async () => {
      while (publishing.on) {
        await server.app.publish('feed.tick', ++published)
        await new Promise((resolve) => setTimeout(resolve, 2))
      }
    })()

    const held = new Set<string>()
    let frames = 0
    const seen = new Map<string, number>()
    await fc.assert(fc.asyncProperty(shape, async (s) => {
      const frame = encode(format, s)
      fc.pre(fits(frame))
      frames++
      const expected = oracle(format, frame, held)
      const kind = expected.kind === 'error' ? expected.code : expected.kind
      seen.set(kind, (seen.get(kind) ?? 0) + 1)
      const problem = check(await exchange(fuzzer, frame), expected)
      if (problem !== undefined) throw new Error(problem)
    }), { numRuns: RUNS, seed: process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED) })

    publishing.on = false
    await publisher
    await good.next(() => good.events().length === published, { timeout: 5000 })
    t.ok(frames >= RUNS, `${frames} frames sent and answered`)
    // The generators reach every answer the protocol has for a lone socket.
    for (const kind of ['none', 'ok', 'BAD_REQUEST', 'BAD_TOPIC', 'BAD_ACK', 'BAD_TOKEN', 'FORBIDDEN']) {
      t.ok((seen.get(kind) ?? 0) > 0, `some frames expected ${kind}`)
    }
    t.comment(`answers: ${JSON.stringify(Object.fromEntries(seen))}`)
    t.ok(published > 10, `${published} events published meanwhile`)
    t.same(good.events().map((event) => event.data), Array.from({ length: published }, (_, i) => i + 1),
      'the well-behaved socket received every event, in order')
    t.same(server.app.eventSocket.stats().subscriptions, held.size + 1, 'the server holds exactly the subscriptions the oracle expects')
    t.same(failures, [], 'nothing was thrown out of a handler')
    t.same(Reflect.ownKeys(Object.prototype), prototypeKeys, 'Object.prototype gained no key')
    t.equal(({} as Record<string, unknown>).polluted, undefined)
    t.equal(fuzzer.ws.readyState, fuzzer.ws.OPEN, 'the fuzzing socket is still open')
  })
}

t.test('a text frame that is not UTF-8 fails the connection with 1007 (RFC 6455), and the others are unaffected', async (t) => {
  const server = await startServer(t)
  const bad = await openClient(t, server, { sub: 'bad' })
  const good = await wellBehaved(t, server)
  // ws sends a text frame of whatever bytes it is given.
  bad.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false })
  t.equal((await bad.closed).code, 1007)
  await server.app.publish('feed.tick', 1)
  t.equal((await good.next((m) => m.op === 'event')).data, 1)
})

for (const format of ['json', 'msgpack'] as const) {
  t.test(`with the default limits a random ${format} stream ends in 4002 or 4029, never in another close`, async (t) => {
    const failures = watchProcess(t)
    const server = await startServer(t)
    const good = await wellBehaved(t, server)
    const closes: number[] = []
    const samples = fc.sample(shape, { numRuns: 400, seed: 42 }).map((s) => encode(format, s)).filter(fits)
    for (let round = 0; round < 3; round++) {
      const fuzzer = await openClient(t, server, { sub: USER, role: 'user', format })
      for (const frame of samples.slice(round * 100, round * 100 + 100)) {
        if (fuzzer.ws.readyState !== fuzzer.ws.OPEN) break
        fuzzer.ws.send(frame.data, { binary: frame.binary })
      }
      closes.push((await fuzzer.closed).code)
      await server.app.publish('feed.tick', round)
    }
    t.ok(closes.every((code) => code === 4002 || code === 4029), `closes: ${closes.join(', ')}`)
    await good.next(() => good.events().length === 3)
    t.same(failures, [])
  })
}
