import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { pack, unpack } from 'msgpackr'
import type { BusMessage } from '../lib/bus/types.js'
import { OutboundEvent, controlMessage, type Format } from '../lib/codec.js'
import { framerFor, SharedFrames, type OutboxEntry } from '../lib/framers.js'
import { FlushQueue } from '../lib/flush-queue.js'
import { OutboundStream, type StreamFault } from '../lib/outbound.js'
import { startServer, type Message, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'
import { gc } from './helpers/gc.js'
import { seededRandom } from './helpers/seeded-random.js'

// Red-team attack on commit 526c11a: SharedFrames.frames(events, format, seq)
// builds the frames of a run of events once per turn and DirectFramer hands
// the same buffer to every socket whose run is identical. Every socket must
// still get exactly its own bytes: its seqs (across digit and varint
// boundaries, which change a frame's header size within a run), its format,
// its order and length of run (window full midway), its control messages in
// place; nothing after its close frame; and the runs must be forgotten at the
// end of the turn, whatever happened during it. The references are built by
// other code paths: OutboundEvent.payload per event, and a twin stream that
// goes through SendFramer (ws.send, one payload per message).

// ---------------------------------------------------------------- helpers

let nextEventId = 0

/** An event whose data is `{ f: fill }` (and its `pos`, history on). */
function makeEvent (fill: number, pos?: string, char = 'x'): OutboundEvent {
  const id = `ev${nextEventId++}`
  const message = { topic: 'sr.t', id, time: 0, payload: Buffer.from(JSON.stringify({ f: char.repeat(fill) })) } as BusMessage
  return new OutboundEvent(message, undefined, pos)
}

/** An event whose payload in `format` with `seq` is exactly `target` bytes. */
function sized (target: number, format: Format, seq: number, pos?: string): OutboundEvent {
  let fill = Math.max(0, target - 100)
  for (let tries = 0; tries < 10; tries++) {
    const event = makeEvent(fill, pos)
    const length = event.payloadLength(format, seq)
    if (length === target) return event
    fill += target - length
    if (fill < 0) break
  }
  throw new Error(`no event of exactly ${target} bytes in ${format} at seq ${seq}`)
}

interface Frame { fin: boolean, rsv: number, opcode: number, payload: Buffer }

/**
 * The frames of `bytes`, which must be whole unmasked frames with minimal
 * length encodings (RFC 6455 section 5.2); throws saying where it is not.
 */
function parseFrames (bytes: Buffer): Frame[] {
  const frames: Frame[] = []
  let at = 0
  while (at < bytes.length) {
    if (at + 2 > bytes.length) throw new Error(`a header cut at byte ${at} of ${bytes.length}`)
    const b0 = bytes[at] as number
    const b1 = bytes[at + 1] as number
    if ((b1 & 0x80) !== 0) throw new Error(`a masked frame at byte ${at}`)
    let length = b1 & 0x7f
    let head = 2
    if (length === 126) {
      length = bytes.readUInt16BE(at + 2)
      head = 4
      if (length < 126) throw new Error(`a 16-bit length of ${length} at byte ${at}`)
    } else if (length === 127) {
      length = Number(bytes.readBigUInt64BE(at + 2))
      head = 10
      if (length < 0x10000) throw new Error(`a 64-bit length of ${length} at byte ${at}`)
    }
    if (at + head + length > bytes.length) throw new Error(`a frame of ${length} bytes at byte ${at} runs past the end (${bytes.length})`)
    frames.push({ fin: (b0 & 0x80) !== 0, rsv: (b0 >> 4) & 0x7, opcode: b0 & 0x0f, payload: bytes.subarray(at + head, at + head + length) })
    at += head + length
  }
  return frames
}

/** What is wrong with `bytes` as the frames of `entries` from `seq` in `format`, or undefined. */
function mismatch (bytes: Buffer, entries: readonly OutboxEntry[], format: Format, seq: number): string | undefined {
  let frames: Frame[]
  try {
    frames = parseFrames(bytes)
  } catch (err) {
    return (err as Error).message
  }
  if (frames.length !== entries.length) return `${frames.length} frames for ${entries.length} entries`
  const opcode = format === 'msgpack' ? 2 : 1
  let next = seq
  for (const [i, entry] of entries.entries()) {
    const frame = frames[i] as Frame
    const expected = entry instanceof OutboundEvent ? entry.payload(format, next++) : entry
    if (!frame.fin || frame.rsv !== 0 || frame.opcode !== opcode) return `frame ${i}: fin ${String(frame.fin)}, rsv ${frame.rsv}, opcode ${frame.opcode}`
    if (!frame.payload.equals(expected)) return `frame ${i} (seq ${next - 1}): ${frame.payload.length} bytes, expected ${expected.length}: ${frame.payload.subarray(0, 40).toString('latin1')}`
  }
  return undefined
}

/** A socket without compression (DirectFramer) whose TCP writes are kept, with a copy taken when each was written. */
function directSocket (): { ws: WebSocket, written: Array<{ chunk: Buffer, copy: Buffer }> } {
  const written: Array<{ chunk: Buffer, copy: Buffer }> = []
  const ws = {
    extensions: '',
    readyState: WebSocket.OPEN,
    bufferedAmount: 0,
    _socket: { write: (chunk: Buffer) => { written.push({ chunk, copy: Buffer.from(chunk) }); return true } }
  } as unknown as WebSocket
  return { ws, written }
}

/** A socket with compression (SendFramer): ws.send is given one payload per message; kept as frames. */
function sendSocket (): { ws: WebSocket, sent: Frame[] } {
  const sent: Frame[] = []
  const ws = {
    extensions: 'permessage-deflate',
    readyState: WebSocket.OPEN,
    bufferedAmount: 0,
    send: (data: Buffer, options: { binary: boolean }) => { sent.push({ fin: true, rsv: 0, opcode: options.binary ? 2 : 1, payload: Buffer.from(data) }) }
  } as unknown as WebSocket
  return { ws, sent }
}

const roomy = { maxPendingEvents: 1_000_000, maxPendingBytes: 1 << 30, maxBufferedBytes: 1 << 30 }

// ---------------------------------------------------------------- the framer on its own

t.test('a run whose seqs cross a digit or varint boundary changes header size within the run: each socket gets its own lengths', async (t) => {
  // [seq before the boundary, the boundary] per format: the envelope grows by
  // a byte (JSON digits) or more (msgpack uint) at the second.
  const boundaries: Array<[Format, number]> = [
    ['json', 9], ['json', 99], ['json', 99_999], ['msgpack', 127], ['msgpack', 65535], ['msgpack', 2 ** 32 - 1]
  ]
  const problems: string[] = []
  let checked = 0
  for (const [format, last] of boundaries) {
    for (const target of [125, 65535]) {
      const shared = new SharedFrames()
      const lead = sized(90, format, last - 1)
      // 125 (or 65535) bytes at `last`: a 2-byte (or 4-byte) header; one more seq, a longer envelope, a longer header.
      const edge = sized(target, format, last)
      t.ok(edge.payloadLength(format, last + 1) > target, `${format} ${target} at ${last}: one seq later, the payload is longer`)
      const tail = sized(70_000, format, last + 1)
      const writes: Array<[OutboxEntry[], number]> = [
        [[lead, edge, tail], last - 1], // edge at `last`
        [[lead, edge, tail], last], // edge one past: longer header, the same events
        [[lead, edge, tail], last - 1], // back: the run kept was replaced, built again
        [[lead, edge, tail], last - 1], // shared with the one before
        [[edge, tail], last], // another first event
        [[edge, tail], last + 1],
        [[lead, edge], last - 1], // a shorter run of the same first event and seq
        [[lead, edge, edge, tail], last - 1], // the same event twice in one run
        [[lead, Buffer.from(format === 'json' ? '{"op":"ok"}' : pack({ op: 'ok' })), edge, tail], last - 1]
      ]
      for (const [entries, seq] of writes) {
        const socket = directSocket()
        const events = entries.filter((entry) => entry instanceof OutboundEvent).length
        const wrote = framerFor(socket.ws, format, shared).write(socket.ws, entries, seq)
        checked++
        if (wrote !== events) problems.push(`${format} ${target} at ${seq}: said ${wrote} events written, not ${events}`)
        if (socket.written.length !== 1) problems.push(`${format} ${target} at ${seq}: ${socket.written.length} writes`)
        const bytes = socket.written[0]?.chunk ?? Buffer.alloc(0)
        const wrong = mismatch(bytes, entries, format, seq)
        if (wrong !== undefined) problems.push(`${format} ${target} from seq ${seq}, ${entries.length} entries: ${wrong}`)
      }
    }
  }
  t.same(problems, [], `${checked} runs across seq boundaries, each framed with its own lengths`)
})

t.test('the run kept is the one written: an array of entries that changes after its write is not taken for the next socket\'s', async (t) => {
  const shared = new SharedFrames()
  const [a, b, c] = [200, 300, 400].map((size) => makeEvent(size))
  const entries: OutboxEntry[] = [a as OutboundEvent, b as OutboundEvent]
  const first = directSocket()
  framerFor(first.ws, 'json', shared).write(first.ws, entries, 3)
  entries.push(c as OutboundEvent)
  const second = directSocket()
  t.equal(framerFor(second.ws, 'json', shared).write(second.ws, [a as OutboundEvent, b as OutboundEvent, c as OutboundEvent], 3), 3)
  t.equal(mismatch(first.written[0]?.chunk ?? Buffer.alloc(0), [a as OutboundEvent, b as OutboundEvent], 'json', 3), undefined, 'the first socket: its two events')
  t.equal(mismatch(second.written[0]?.chunk ?? Buffer.alloc(0), [a as OutboundEvent, b as OutboundEvent, c as OutboundEvent], 'json', 3), undefined, 'the second: all three, not the first one\'s two')
})

t.test('1,000 sockets, each a distinct run in one turn (same first events, other lengths, orders, seqs, formats): every buffer its own and unchanged after', async (t) => {
  const shared = new SharedFrames()
  const sizes = [3, 60, 110, 200, 3000, 65_500, 70_000]
  const pool = sizes.map((size) => makeEvent(size))
  for (const event of pool) t.ok(event.encodes('json') && event.encodes('msgpack'))
  const random = seededRandom(1000)
  const writes: Array<{ entries: OutboxEntry[], format: Format, seq: number, socket: ReturnType<typeof directSocket> }> = []
  for (let i = 0; i < 1000; i++) {
    // Every run starts with one of three events: the kept run of its key is replaced over and over.
    const entries: OutboxEntry[] = [pool[i % 3] as OutboundEvent]
    const length = 1 + Math.floor(random() * 5)
    for (let k = 1; k < length; k++) {
      // The big ones rarely: a thousand runs of them would be a lot of memory for a test.
      const pick = random() < 0.05 ? pool.length : 5
      entries.push(pool[Math.floor(random() * pick)] as OutboundEvent)
    }
    if (random() < 0.1) entries.splice(1 + Math.floor(random() * entries.length), 0, controlMessage(i % 2 === 0 ? 'json' : 'msgpack', { op: 'ok', id: i }))
    const format: Format = i % 2 === 0 ? 'json' : 'msgpack'
    // Runs that cross a JSON digit or a msgpack uint boundary among them.
    const seq = [1, 8, 97, 125, 65_534][Math.floor(random() * 5)] as number
    const socket = directSocket()
    framerFor(socket.ws, format, shared).write(socket.ws, entries, seq)
    writes.push({ entries, format, seq, socket })
  }
  const problems: string[] = []
  let reused = 0
  for (const [i, { entries, format, seq, socket }] of writes.entries()) {
    if (socket.written.length !== 1) {
      problems.push(`socket ${i}: ${socket.written.length} writes`)
      continue
    }
    const { chunk, copy } = socket.written[0] as { chunk: Buffer, copy: Buffer }
    if (!chunk.equals(copy)) problems.push(`socket ${i}: its buffer changed after it was written (a later socket's run was built into it)`)
    const wrong = mismatch(copy, entries, format, seq)
    if (wrong !== undefined) problems.push(`socket ${i} (${format}, seq ${seq}, ${entries.length} entries): ${wrong}`)
    if (writes.slice(0, i).some((other) => other.socket.written[0]?.chunk === chunk)) reused++
  }
  t.same(problems.slice(0, 5), [], `every socket's bytes are its run's (${problems.length} wrong)`)
  t.comment(`${reused} of 1,000 sockets were written a buffer built for an earlier one`)
})

// ---------------------------------------------------------------- streams, windows and the flush queue

interface Pair {
  direct: OutboundStream
  twin: OutboundStream
  directSocket: ReturnType<typeof directSocket>
  twinSocket: ReturnType<typeof sendSocket>
  format: Format
  faults: StreamFault[]
}

t.test('streams of one flush queue at different seqs and windows, bursts of every header size, acks mid-turn, controls: each direct socket gets what its ws.send twin gets', async (t) => {
  const flushes = new FlushQueue()
  let written = 0
  const host = { flushes, sent: (count: number) => { written += count }, slowConsumer: () => {} }
  const random = seededRandom(526)
  const cohorts = 12
  const perCohort = 16
  // A cohort subscribes at one turn with one window and format: its streams number alike, so share runs, until some of them drift.
  const cohortSpec = Array.from({ length: cohorts }, (_, c) => ({
    start: c % 6,
    window: [1, 2, 3, 5, 8, 1000][c % 6] as number,
    format: (c % 2 === 0 ? 'json' : 'msgpack') as Format
  }))
  const pairs: Pair[] = cohortSpec.flatMap(({ window, format }) => Array.from({ length: perCohort }, () => {
    const ds = directSocket()
    const ts = sendSocket()
    const faults: StreamFault[] = []
    const limits = { window, ...roomy }
    return {
      direct: new OutboundStream(ds.ws, format, limits, host, { faulted: (fault) => { faults.push(fault) } }),
      twin: new OutboundStream(ts.ws, format, limits, host, { faulted: (fault) => { faults.push(fault) } }),
      directSocket: ds,
      twinSocket: ts,
      format,
      faults
    }
  }))
  const problems: string[] = []
  let writes = 0
  let sharedWrites = 0
  /** Last event seq each direct socket was sent. */
  const seqs = new Map<Pair, number>()
  /** After a turn's flush (every socket written): each direct socket's bytes, unchanged since written, are its twin's frames. */
  const check = (turn: number): void => {
    const seen = new Set<Buffer>()
    for (const [p, pair] of pairs.entries()) {
      if (pair.faults.length > 0) problems.push(`turn ${turn}, pair ${p}: faulted ${JSON.stringify(pair.faults)}`)
      const got: Frame[] = []
      for (const { chunk, copy } of pair.directSocket.written) {
        writes++
        if (seen.has(chunk)) sharedWrites++
        seen.add(chunk)
        if (!chunk.equals(copy)) problems.push(`turn ${turn}, pair ${p}: its buffer changed after it was written`)
        try {
          got.push(...parseFrames(copy))
        } catch (err) {
          problems.push(`turn ${turn}, pair ${p}: ${(err as Error).message}`)
        }
      }
      const want = pair.twinSocket.sent
      if (got.length !== want.length) problems.push(`turn ${turn}, pair ${p}: ${got.length} frames direct, ${want.length} through ws.send`)
      for (let i = 0; i < Math.min(got.length, want.length); i++) {
        const a = got[i] as Frame
        const b = want[i] as Frame
        if (a.opcode !== b.opcode || !a.payload.equals(b.payload)) {
          problems.push(`turn ${turn}, pair ${p} (${pair.format}), frame ${i}: direct ${a.payload.subarray(0, 48).toString('latin1')} / ws.send ${b.payload.subarray(0, 48).toString('latin1')}`)
          break
        }
      }
      let seq = seqs.get(pair) ?? 0
      for (const frame of got) {
        const message = (frame.opcode === 2 ? unpack(frame.payload) : JSON.parse(frame.payload.toString())) as Message
        if (message.op !== 'event') continue
        if (message.seq !== ++seq) {
          problems.push(`turn ${turn}, pair ${p}: seq ${String(message.seq)} where ${seq} was due`)
          seq = message.seq as number
        }
      }
      seqs.set(pair, seq)
      // Forgotten: the test holds one turn's bytes at a time.
      pair.directSocket.written.length = 0
      pair.twinSocket.sent.length = 0
    }
  }
  const sizes = [1, 40, 100, 118, 124, 126, 300, 1500, 4100, 65_450, 65_540, 70_000]
  const turns = 40
  for (let turn = 0; turn < turns; turn++) {
    // Acks first (they drain what waited behind the window into this turn's outbox), each cohort alike, some streams on their own.
    for (let c = 0; c < cohorts; c++) {
      const cohortAck = random()
      for (const pair of pairs.slice(c * perCohort, (c + 1) * perCohort)) {
        const r = random() < 0.15 ? random() : cohortAck
        if (r < 0.5 || pair.direct.lastSent === 0) continue
        const seq = r < 0.8 ? pair.direct.lastSent : 1 + Math.floor(random() * pair.direct.lastSent)
        pair.direct.ack(seq)
        pair.twin.ack(seq)
      }
    }
    // The burst of the turn: new events, the big ones rarely.
    const burst = Array.from({ length: 1 + Math.floor(random() * 7) }, () => {
      const size = sizes[Math.floor(random() * (random() < 0.15 ? sizes.length : sizes.length - 3))] as number
      return makeEvent(size, random() < 0.3 ? `p${turn}` : undefined, String.fromCharCode(97 + turn % 26))
    })
    for (let c = 0; c < cohorts; c++) {
      if (turn < (cohortSpec[c]?.start ?? 0)) continue
      for (const pair of pairs.slice(c * perCohort, (c + 1) * perCohort)) {
        const drift = random()
        const entries: Array<OutboundEvent | 'control'> = drift < 0.85 ? burst.slice() : burst.filter(() => random() < 0.6)
        if (drift > 0.95 && entries.length > 0) entries.push(entries[0] as OutboundEvent) // the same event twice in one turn
        if (random() < 0.08) entries.splice(Math.floor(random() * (entries.length + 1)), 0, 'control')
        for (const entry of entries) {
          if (entry === 'control') {
            pair.direct.control({ op: 'ok', id: turn })
            pair.twin.control({ op: 'ok', id: turn })
          } else {
            pair.direct.push(entry)
            pair.twin.push(entry)
          }
        }
      }
    }
    // A stream flushed early, as Connection.close does, before the turn's flush: its run is built outside flushAll.
    const early = pairs[(turn * 7) % pairs.length] as Pair
    early.direct.flush()
    early.twin.flush()
    flushes.flushAll()
    check(turn)
  }
  // Everything still waiting behind a window, acked out.
  for (let round = 0; round < 500; round++) {
    let waiting = 0
    for (const pair of pairs) {
      waiting += pair.direct.pendingCount
      pair.direct.ack(pair.direct.lastSent)
      pair.twin.ack(pair.twin.lastSent)
    }
    flushes.flushAll()
    check(turns + round)
    if (waiting === 0) break
  }
  t.same(problems.slice(0, 6), [], `every direct socket's frames are its twin's (${problems.length} problems)`)
  t.same(pairs.filter((pair) => pair.direct.pendingCount > 0).length, 0, 'nothing left behind a window')
  t.ok(written > 0, `${written} event frames written`)
  t.ok(sharedWrites > 0, `runs were shared: ${sharedWrites} of ${writes} writes were a buffer another socket of the turn was written`)
})

/** Whether the run `ref` was written (msgpack, from `seq`) is still what the flush queue's frames hand out, its turn over; in a frame of its own, so that no strong reference is left in the caller's. */
function keptPastTurn (flushes: FlushQueue, ref: WeakRef<Buffer> | undefined, events: OutboundEvent[], seq: number): boolean {
  const written = ref?.deref()
  const built = flushes.frames.frames(events, 'msgpack', seq)
  flushes.frames.clear()
  return written === undefined || built === written || !built.equals(written)
}

t.test('the runs of a turn are forgotten when it ends: 1,000 distinct runs, a flush that throws, an early flush', async (t) => {
  const flushes = new FlushQueue()
  const host = { flushes, sent: () => {}, slowConsumer: () => {} }
  const refs: Array<WeakRef<Buffer>> = []
  /** The last write of each stream, by index. */
  const last = new Map<number, WeakRef<Buffer>>()
  const faults: unknown[] = []
  // Sockets that keep nothing of what they are written but a weak reference.
  const streams = Array.from({ length: 1000 }, (_, i) => {
    const ws = {
      extensions: '',
      readyState: WebSocket.OPEN,
      bufferedAmount: 0,
      _socket: {
        write: (chunk: Buffer) => {
          const ref = new WeakRef(chunk)
          refs.push(ref)
          last.set(i, ref)
          if (i === 500) throw new Error('write failed')
          return true
        }
      }
    } as unknown as WebSocket
    return new OutboundStream(ws, i % 2 === 0 ? 'json' : 'msgpack', { window: 1000, ...roomy }, host, { faulted: (fault) => { faults.push(fault) } })
  })
  const turns = 5
  let stale = 0
  for (let turn = 0; turn < turns; turn++) {
    // Past 4 KB per run, so that each is an allocation of its own, not a slice of Buffer's pool.
    const events = Array.from({ length: 1005 }, () => makeEvent(1200))
    for (const [i, stream] of streams.entries()) for (let k = 0; k < 5; k++) stream.push(events[i + k] as OutboundEvent)
    ;(streams[turn] as OutboundStream).flush() // early, as at a close
    flushes.flushAll()
    // At once, before the loop turns: the run stream 1 (msgpack, seq 5 turn + 1) was written is not the one built now.
    if (keptPastTurn(flushes, last.get(1), events.slice(1, 6), turn * 5 + 1)) stale++
  }
  t.equal(stale, 0, 'once a turn\'s flush is over, its runs are built anew (none kept for the next)')
  // The control: a run a SharedFrames still holds, through the same collections.
  const held = new SharedFrames()
  const heldRef = new WeakRef(held.frames([makeEvent(6000)], 'json', 1))
  t.equal(refs.length, 1000 * turns, 'one write per stream and turn')
  t.equal(faults.length, turns, 'the stream whose write threw is told so each turn; the others were written all the same')
  // WeakRefs keep their targets until the job that made them ends.
  await new Promise((resolve) => setImmediate(resolve))
  gc()
  await new Promise((resolve) => setImmediate(resolve))
  gc()
  const alive = refs.filter((ref) => ref.deref() !== undefined).length
  t.ok(heldRef.deref() !== undefined, 'a run a SharedFrames still holds survives the same collections: the check sees a leak')
  held.clear()
  t.equal(alive, 0, `no run's bytes outlive their turn (${alive} of ${refs.length} still held)`)
})

// ---------------------------------------------------------------- end to end

interface Peer {
  i: number
  ws: WebSocket
  format: Format
  messages: Message[]
  closed: { code: number, reason: string } | undefined
  /** Acks each event as it arrives. */
  acking: boolean
}

function send (peer: Peer, message: unknown): void {
  peer.ws.send(peer.format === 'msgpack' ? pack(message) : JSON.stringify(message))
}

function openPeer (t: Test, server: TestServer, i: number, sub: string, format: Format, deflate: boolean): Peer {
  const ws = new WebSocket(server.url, format === 'msgpack' ? ['evsock.v1.msgpack'] : [], {
    headers: { authorization: `Bearer ${server.sign({ sub, role: 'admin' })}` },
    perMessageDeflate: deflate
  })
  const peer: Peer = { i, ws, format, messages: [], closed: undefined, acking: false }
  ws.on('message', (data: Buffer, binary) => {
    const message = (binary ? unpack(data) : JSON.parse(data.toString())) as Message
    peer.messages.push(message)
    if (peer.acking && message.op === 'event') send(peer, { op: 'ack', seq: message.seq })
  })
  ws.on('close', (code, reason) => { peer.closed = { code, reason: reason.toString() } })
  ws.on('error', () => {})
  t.teardown(() => { ws.terminate() })
  return peer
}

function events (peer: Peer): Message[] {
  return peer.messages.filter((message) => message.op === 'event')
}

/** Subscribes every peer to `topic` and waits for each answer. */
async function subscribeAll (peers: Peer[], topic: string): Promise<void> {
  const id = nextRequestId++
  for (const peer of peers) send(peer, { op: 'sub', id, topic })
  await waitFor(() => peers.every((peer) => peer.messages.some((message) => message.id === id && message.op === 'ok')), {
    what: `every peer's ok to sub ${topic}`,
    timeoutMs: 30_000,
    detail: () => JSON.stringify(peers.find((peer) => !peer.messages.some((message) => message.id === id && message.op === 'ok'))?.messages.slice(-3))
  })
}

let nextRequestId = 1

/** Records, from now on, every chunk ws or the framer writes to each server-side socket. */
function recordServerWrites (server: TestServer): Map<object, Buffer[]> {
  const writes = new Map<object, Buffer[]>()
  for (const socket of server.app.websocketServer.clients as Set<WebSocket>) {
    const tcp = (socket as unknown as { _socket: { write: (chunk: Buffer, ...rest: unknown[]) => boolean } })._socket
    const chunks: Buffer[] = []
    writes.set(socket, chunks)
    const write = tcp.write.bind(tcp)
    tcp.write = (chunk: Buffer, ...rest: unknown[]) => {
      chunks.push(Buffer.from(chunk))
      return write(chunk, ...rest)
    }
  }
  return writes
}

/** A burst's data: `n`, and a fill of a letter per event that tells a swapped frame. */
function burstData (sizes: number[], tag: string): Array<{ tag: string, n: number, fill: string }> {
  return sizes.map((size, n) => ({ tag, n, fill: String.fromCharCode(97 + n % 26).repeat(size) }))
}

function intact (message: Message, data: { tag: string, n: number, fill: string }): boolean {
  return message.data?.tag === data.tag && message.data?.n === data.n && message.data?.fill === data.fill
}

t.test('a burst over windows that fill midway, at different seqs, both formats, compression mixed, some sockets revoked in the same turn', async (t) => {
  const window = 6
  const server = await startServer(t, { compression: true, window, handshakesPerMinute: 100_000 })
  const count = 48
  // Four cohorts, each a lead of its own (0 to 3 unacked events): its sockets number the burst alike and have 6 - c of room.
  const cohortOf = (i: number): number => i % 4
  const doomed = (i: number): boolean => i % 8 === 7 || i % 8 === 2
  const peers = Array.from({ length: count }, (_, i) => openPeer(t, server, i, doomed(i) ? 'doomed' : 'keeper', i % 2 === 0 ? 'json' : 'msgpack', i % 3 === 0))
  await waitFor(() => peers.every((peer) => peer.messages.some((message) => message.op === 'hello')), { what: 'every hello', timeoutMs: 30_000 })
  await subscribeAll(peers, 'sr.all')
  for (let c = 0; c < 4; c++) await subscribeAll(peers.filter((peer) => cohortOf(peer.i) === c), `sr.lead.${c}`)
  for (let c = 0; c < 4; c++) for (let k = 0; k < c; k++) await server.app.publish(`sr.lead.${c}`, { lead: k })
  await waitFor(() => peers.every((peer) => events(peer).length === cohortOf(peer.i)), { what: 'the lead events', timeoutMs: 30_000 })
  const writes = recordServerWrites(server)

  // Every header size, in one turn; then, in the same turn, the revocation closes the doomed (their outbox flushed early).
  const burst = burstData([5, 90, 117, 300, 4000, 65_480, 20, 70_000, 10, 130_000], 'b')
  let turnOver = false
  setImmediate(() => { turnOver = true })
  const published = burst.map((data) => server.app.publish('sr.all', data))
  t.notOk(turnOver, 'the burst was published in one turn')
  const revoked = server.app.eventSocket.revoke('doomed')
  t.notOk(turnOver, 'the revocation closed the doomed sockets in the same turn')
  await Promise.all(published)
  t.equal(await revoked, peers.filter((peer) => doomed(peer.i)).length, 'every doomed socket closed')

  const keepers = peers.filter((peer) => !doomed(peer.i))
  const dead = peers.filter((peer) => doomed(peer.i))
  await waitFor(() => dead.every((peer) => peer.closed !== undefined), { what: 'the doomed sockets\' close', timeoutMs: 30_000 })
  // Each keeper got what its window allowed; acking from where it is lets the rest through.
  await waitFor(() => keepers.every((peer) => events(peer).length === window), {
    what: 'a full window at every keeper',
    timeoutMs: 30_000,
    detail: () => JSON.stringify(keepers.filter((peer) => events(peer).length !== window).map((peer) => [peer.i, events(peer).length]))
  })
  for (const peer of keepers) {
    peer.acking = true
    send(peer, { op: 'ack', seq: window })
  }
  await server.app.publish('sr.all', { tag: 'sentinel' })
  await waitFor(() => keepers.every((peer) => events(peer).some((event) => event.data?.tag === 'sentinel')), {
    what: 'the sentinel at every keeper',
    timeoutMs: 60_000,
    detail: () => JSON.stringify(keepers.filter((peer) => !events(peer).some((event) => event.data?.tag === 'sentinel')).map((peer) => [peer.i, events(peer).length]))
  })

  const problems: string[] = []
  for (const peer of keepers) {
    const got = events(peer)
    const c = cohortOf(peer.i)
    const seqsOk = got.every((event, k) => event.seq === k + 1)
    const burstGot = got.slice(c, c + burst.length)
    const dataOk = got.length === c + burst.length + 1 && burstGot.every((event, n) => intact(event, burst[n] as typeof burst[0])) && got.at(-1)?.data?.tag === 'sentinel'
    if (!seqsOk || !dataOk || peer.closed !== undefined) {
      problems.push(`keeper ${peer.i} (${peer.format}, cohort ${c}): seqs ${got.map((event) => String(event.seq)).join(',')}, data ${got.map((event) => `${String(event.data?.n)}:${String(event.data?.fill?.length)}`).join(',')}, closed ${JSON.stringify(peer.closed)}`)
    }
  }
  for (const peer of dead) {
    const got = events(peer)
    const c = cohortOf(peer.i)
    // Its window's worth of the burst, written before its close frame; the rest was dropped with it.
    const burstGot = got.slice(c)
    const ok = got.every((event, k) => event.seq === k + 1) && burstGot.length === window - c && burstGot.every((event, n) => intact(event, burst[n] as typeof burst[0]))
    if (!ok || peer.closed?.code !== 4001) {
      problems.push(`doomed ${peer.i} (${peer.format}, cohort ${c}): closed ${JSON.stringify(peer.closed)}, seqs ${got.map((event) => String(event.seq)).join(',')}, data ${burstGot.map((event) => `${String(event.data?.n)}:${String(event.data?.fill?.length)}`).join(',')}`)
    }
  }
  // On the server side: after a close frame, nothing.
  let closes = 0
  for (const [socket, chunks] of writes) {
    let frames: Frame[]
    try {
      frames = parseFrames(Buffer.concat(chunks))
    } catch (err) {
      problems.push(`a server socket's writes: ${(err as Error).message}`)
      continue
    }
    const close = frames.findIndex((frame) => frame.opcode === 8)
    if (close === -1) continue
    closes++
    if (close !== frames.length - 1) problems.push(`a server socket wrote ${frames.length - 1 - close} frames after its close frame (state ${(socket as WebSocket).readyState})`)
  }
  t.equal(closes, dead.length, 'a close frame on each doomed socket\'s wire, none on a keeper\'s')
  t.same(problems.slice(0, 5), [], `every socket got its own frames (${problems.length} wrong)`)
})

t.test('history on: resuming sockets replay from many places while live bursts go out in the same turns', async (t) => {
  const window = 8
  const server = await startServer(t, { compression: true, window, history: true, handshakesPerMinute: 100_000 })
  // The recorder was there from the start: it tells each event's pos.
  const recorder = openPeer(t, server, -1, 'recorder', 'json', false)
  recorder.acking = true
  await waitFor(() => recorder.messages.some((message) => message.op === 'hello'), { what: 'the recorder\'s hello' })
  await subscribeAll([recorder], 'sr.h.#')
  const sizeAt = (n: number): number => [10, 120, 5000, 300, 65_500, 40][n % 6] as number
  const early = burstData(Array.from({ length: 36 }, (_, n) => sizeAt(n) + (n % 10 === 9 ? 70_000 : 0)), 'early')
  for (const data of early) await server.app.publish('sr.h.x', data)
  await waitFor(() => events(recorder).length === early.length, { what: 'the early events at the recorder', timeoutMs: 30_000 })
  const posOf = new Map<string, string>()
  for (const event of events(recorder)) posOf.set(`${String(event.data?.tag)}:${String(event.data?.n)}`, event.pos as string)

  const count = 40
  // Ten places to resume from, four sockets each (their replays alike: they may share runs).
  const from = (i: number): number => (i % 10) * 3
  const peers = Array.from({ length: count }, (_, i) => openPeer(t, server, i, 'resumer', i % 2 === 0 ? 'json' : 'msgpack', i % 3 === 0))
  await waitFor(() => peers.every((peer) => peer.messages.some((message) => message.op === 'hello')), { what: 'every hello', timeoutMs: 30_000 })
  for (const peer of peers) peer.acking = true
  const id = nextRequestId++
  for (const peer of peers) send(peer, { op: 'sub', id, topic: 'sr.h.#', since: posOf.get(`early:${from(peer.i)}`) })
  // Live bursts while the replays read: in the turns the subs are taken in, and after.
  const live: Array<{ tag: string, n: number, fill: string }> = []
  for (let round = 0; round < 8; round++) {
    const burst = burstData([7, 126, 3000, 66_000, 15].slice(0, 2 + round % 4), `live${round}`)
    live.push(...burst)
    await Promise.all(burst.map((data) => server.app.publish('sr.h.y', data)))
    // The later rounds once the subs are in, while the replays read (each a window at a time).
    if (round === 2) await waitFor(() => peers.filter((peer) => peer.messages.some((message) => message.id === id)).length >= count / 2, { what: 'half the subs answered', timeoutMs: 30_000 })
    await new Promise((resolve) => { if (round % 2 === 0) setImmediate(resolve); else setTimeout(resolve, 3) })
  }
  const last = live.at(-1) as typeof live[0]
  await waitFor(() => peers.every((peer) => events(peer).some((event) => intact(event, last))), {
    what: 'the last live event at every resuming socket',
    timeoutMs: 90_000,
    detail: () => JSON.stringify(peers.filter((peer) => !events(peer).some((event) => intact(event, last))).map((peer) => [peer.i, events(peer).length, peer.closed]))
  })
  await waitFor(() => events(recorder).some((event) => intact(event, last)), { what: 'the last live event at the recorder', timeoutMs: 30_000 })
  for (const event of events(recorder)) posOf.set(`${String(event.data?.tag)}:${String(event.data?.n)}`, event.pos as string)

  const all = [...early, ...live]
  const problems: string[] = []
  for (const peer of peers) {
    const got = events(peer)
    const want = all.slice(from(peer.i) + 1)
    const seqsOk = got.every((event, k) => event.seq === k + 1)
    const dataOk = got.length === want.length && got.every((event, k) => intact(event, want[k] as typeof want[0]))
    const posOk = got.every((event) => event.pos === posOf.get(`${String(event.data?.tag)}:${String(event.data?.n)}`))
    if (!seqsOk || !dataOk || !posOk || peer.closed !== undefined) {
      problems.push(`resumer ${peer.i} (${peer.format}) from ${from(peer.i)}: ${got.length} events for ${want.length}, seqs ok ${String(seqsOk)}, data ok ${String(dataOk)}, pos ok ${String(posOk)}, closed ${JSON.stringify(peer.closed)}; got ${got.slice(0, 12).map((event) => `${String(event.data?.tag)}:${String(event.data?.n)}@${String(event.seq)}`).join(',')}`)
    }
  }
  t.same(problems.slice(0, 4), [], `each resuming socket got every event after its place once, in order, with its own seqs (${problems.length} wrong)`)
})

t.test('a socket whose write throws while it shares a run: it is closed with 1011, the others get the run and go on', async (t) => {
  const server = await startServer(t, { compression: false, handshakesPerMinute: 100_000 })
  const peers = Array.from({ length: 12 }, (_, i) => openPeer(t, server, i, 'u', i % 2 === 0 ? 'json' : 'msgpack', false))
  await waitFor(() => peers.every((peer) => peer.messages.some((message) => message.op === 'hello')), { what: 'every hello', timeoutMs: 30_000 })
  await subscribeAll(peers, 'sr.w')
  const sockets = [...server.app.websocketServer.clients as Set<WebSocket>]
  t.equal(sockets.length, peers.length)
  // Two sockets throw on their next write: the run they were to be written is shared with others of their format.
  const thrown: string[] = []
  for (const socket of sockets.slice(0, 2)) {
    const tcp = (socket as unknown as { _socket: { write: (chunk: Buffer, ...rest: unknown[]) => boolean } })._socket
    const write = tcp.write.bind(tcp)
    let armed = true
    tcp.write = (chunk: Buffer, ...rest: unknown[]) => {
      if (armed) {
        armed = false
        thrown.push(`${chunk.length} bytes`)
        throw new Error('write failed')
      }
      return write(chunk, ...rest)
    }
  }
  const burst = burstData([3, 200, 70_000, 9], 'w')
  await Promise.all(burst.map((data) => server.app.publish('sr.w', data)))
  await waitFor(() => peers.filter((peer) => peer.closed !== undefined).length === 2, { what: 'the two failed sockets closed', timeoutMs: 10_000 })
  t.equal(thrown.length, 2, 'both writes threw')
  const failed = peers.filter((peer) => peer.closed !== undefined)
  t.same(failed.map((peer) => peer.closed?.code), [1011, 1011], 'closed with 1011')
  t.same(failed.map((peer) => events(peer).length), [0, 0], 'with nothing of the run that threw')
  const rest = peers.filter((peer) => peer.closed === undefined)
  await server.app.publish('sr.w', { tag: 'after' })
  await waitFor(() => rest.every((peer) => events(peer).length === burst.length + 1), { what: 'the burst and the next event at the others', timeoutMs: 30_000 })
  const wrong = rest.filter((peer) => {
    const got = events(peer)
    return !got.every((event, k) => event.seq === k + 1) || !burst.every((data, n) => intact(got[n] as Message, data)) || got.at(-1)?.data?.tag !== 'after'
  })
  t.same(wrong.map((peer) => peer.i), [], 'the others got the run whole, then the next turn\'s event')
})
