import { test } from 'tap'
import { openClient, startServer, type Message, type TestClient } from './helpers/server.js'
import { roundTrip, waitFor, within } from './helpers/wait.js'

// Hostile and unusual frames against history and resume (docs/protocol.md
// sections 2 and 6), MessagePack clients resuming beside JSON ones, and
// history off, where a since changes nothing.

/** Sends `frame` with id `id` and resolves with its answer. */
async function answerTo (client: TestClient, frame: Record<string, unknown>, id: number): Promise<Message> {
  const from = client.messages.length
  client.send({ ...frame, id })
  return await client.next((message) => message.id === id && (message.op === 'ok' || message.op === 'error'), { from, timeout: 5000 })
}

/** The pos of event `id` on `client`, once it arrived. */
async function posOf (client: TestClient, id: string): Promise<string> {
  await waitFor(() => client.events().some((event) => event.id === id), { what: `event ${id}` })
  return client.events().find((event) => event.id === id)?.pos as string
}

for (const history of [true, false]) {
  test(`since of the wrong type is BAD_REQUEST from validation, counted as a bad frame (history ${history ? 'on' : 'off'})`, async (t) => {
    const server = await startServer(t, { history, maxBadFrames: 100 })
    const client = await openClient(t, server)
    const wrong: unknown[] = [0, 12, -1, 1.5, true, false, null, {}, { pos: 'x' }, [], ['a-0'], { toString: 'a-0' }]
    for (const [i, since] of wrong.entries()) {
      const answer = await answerTo(client, { op: 'sub', topic: `w.${i}`, since }, i + 1)
      t.same({ op: answer.op, code: answer.code, message: answer.message }, { op: 'error', code: 'BAD_REQUEST', message: 'since must be a string' }, `since ${JSON.stringify(since)}`)
    }
    t.equal(server.app.eventSocket.stats().subscriptions, 0, 'none of them subscribed')
  })
}

test('ten wrongly typed since close the connection with 4002, like any bad frame', async (t) => {
  const server = await startServer(t, { history: true, maxBadFrames: 10 })
  const client = await openClient(t, server)
  for (let i = 0; i < 10; i++) client.send({ op: 'sub', id: i, topic: 'w.x', since: i })
  t.equal((await within(client.closed, { what: 'the 4002 close' })).code, 4002)
})

test('since on an unsub is ignored like any unknown field: the unsub is answered ok and ends the pattern', async (t) => {
  const server = await startServer(t, { history: true })
  const client = await openClient(t, server)
  client.ackEach()
  await answerTo(client, { op: 'sub', topic: 'u.*' }, 1)
  const { id } = await server.app.publish('u.1', {})
  const pos = await posOf(client, id)
  for (const [i, since] of [pos, 42, {}, 'nonsense'].entries()) {
    const answer = await answerTo(client, { op: 'unsub', topic: 'u.*', since }, 10 + i)
    t.equal(answer.op, 'ok', `unsub with since ${JSON.stringify(since)}`)
  }
  await server.app.publish('u.2', {})
  await answerTo(client, { op: 'sub', topic: 'sentinel.*' }, 20)
  const { id: sentinel } = await server.app.publish('sentinel.1', {})
  await posOf(client, sentinel)
  t.same(client.events().map((event) => event.topic), ['u.1', 'sentinel.1'], 'u.2 not sent: the unsub held')
})

test('positions that look valid but were never issued: BAD_REQUEST at once, not counted, the connection stays usable', async (t) => {
  const server = await startServer(t, { history: true, maxBadFrames: 2, maxMessageBytes: 64 * 1024 })
  const client = await openClient(t, server)
  client.ackEach()
  await answerTo(client, { op: 'sub', topic: 'h.*' }, 1)
  let id = ''
  // Twelve events: the newest's offset is written with a letter, whose upper case is no position.
  for (let i = 0; i < 12; i++) id = (await server.app.publish(`h.${i}`, {})).id
  const pos = await posOf(client, id)
  const epoch = pos.slice(0, pos.indexOf('-'))
  const offset = parseInt(pos.slice(pos.indexOf('-') + 1), 36)
  const beyond = [
    `${epoch}-${(offset + 1).toString(36)}`,
    `${epoch}-${(offset + 1000).toString(36)}`,
    `${epoch}-zzzzzzzzzz`,
    `${epoch}-zzzzzzzzzzz`,
    `${epoch}-${'z'.repeat(60_000)}`,
    `${epoch}-${offset.toString(36).toUpperCase()}`,
    `${epoch}-0${offset.toString(36)}`,
    `${epoch}--1`,
    `${epoch}-1e3`,
    `${epoch}-`,
    '-0',
    // The epoch is random hex: one in digits only (1 in 43) has no upper case; it is then the real epoch, whose offset 0 was issued.
    ...(epoch === epoch.toUpperCase() ? [] : [`${epoch.toUpperCase()}-0`]),
    ` ${pos}`,
    `${pos} `,
    `${pos}\u0000`,
    'x'.repeat(60_000)
  ]
  let slowest = 0
  for (const [i, since] of beyond.entries()) {
    const started = Date.now()
    const answer = await answerTo(client, { op: 'sub', topic: 'h.*.x', since }, 100 + i)
    slowest = Math.max(slowest, Date.now() - started)
    t.same({ op: answer.op, code: answer.code }, { op: 'error', code: 'BAD_REQUEST' }, `since ${since.length > 40 ? `${since.slice(0, 20)}… (${since.length} chars)` : JSON.stringify(since)}`)
  }
  // The wait for another instance's head is 5 s: a single instance knows its own.
  t.ok(slowest < 2500, `each answered without waiting for a head (slowest ${slowest} ms)`)
  const resumed = await answerTo(client, { op: 'sub', topic: 'h.*.x', since: pos }, 200)
  t.same({ op: resumed.op, recovered: resumed.recovered }, { op: 'ok', recovered: true }, `the real pos still resumes, after ${beyond.length} refusals with maxBadFrames 2`)
})

test('a MessagePack and a JSON client resuming together get the same events with the same pos, replayed and live', async (t) => {
  const server = await startServer(t, { history: true, window: 3 })
  const first = await openClient(t, server)
  first.ackEach()
  await answerTo(first, { op: 'sub', topic: 'm.#' }, 1)
  const { id } = await server.app.publish('m.0', { n: 0 })
  const since = await posOf(first, id)
  for (let i = 1; i <= 20; i++) await server.app.publish(i % 3 === 0 ? 'n.x' : `m.${i}`, { n: i, text: 'é\u2028"\\' })
  const clients = await Promise.all((['msgpack', 'json', 'msgpack'] as const).map(async (format) => {
    const client = await openClient(t, server, { format })
    client.ackEach()
    return client
  }))
  for (const client of clients) client.send({ op: 'sub', id: 2, topic: 'm.#', since })
  for (const client of clients) t.equal((await client.next((message) => message.id === 2)).recovered, true, `${client.format} recovered`)
  for (let i = 21; i <= 25; i++) await server.app.publish(`m.${i}`, { n: i, text: 'é\u2028"\\' })
  const { id: sentinel } = await server.app.publish('m.end', { n: 26 })
  for (const client of clients) await posOf(client, sentinel)
  const streams = clients.map((client) => client.events().map((event) => ({ id: event.id, pos: event.pos, topic: event.topic, data: event.data })))
  const expected = first.events().slice(1).map((event) => ({ id: event.id, pos: event.pos, topic: event.topic, data: event.data }))
  t.same(streams[0], expected, 'msgpack: what the live JSON client got after since, pos included')
  t.same(streams[1], expected, 'json')
  t.same(streams[2], expected, 'the second msgpack client')
  t.ok(streams[0]?.every((event) => typeof event.pos === 'string'), 'pos decodes as a string from MessagePack')
})

test('history off: no pos on events or ok, and a since is answered recovered false without a replay', async (t) => {
  const server = await startServer(t, { window: 2 })
  const first = await openClient(t, server)
  first.ackEach()
  await answerTo(first, { op: 'sub', topic: 'o.*' }, 1)
  const { id } = await server.app.publish('o.1', {})
  await posOf(first, id)
  const second = await openClient(t, server)
  second.ackEach()
  const ok = await answerTo(second, { op: 'sub', topic: 'o.*', since: 'anything-0' }, 2)
  t.same(ok, { op: 'ok', id: 2, recovered: false }, 'recovered false, no pos')
  const plain = await answerTo(second, { op: 'sub', topic: 'p.*' }, 3)
  t.same(plain, { op: 'ok', id: 3 }, 'a sub without since: no pos')
  await roundTrip(second)
  const { id: sentinel } = await server.app.publish('o.2', {})
  await posOf(second, sentinel)
  t.same(second.events().map((event) => event.id), [sentinel], 'nothing replayed: o.1 never came')
  t.notOk(second.events().some((event) => 'pos' in event), 'no pos')
})
