// A load-generator process: holds a slice of the run's client sockets, counts
// what they receive, records latency, and plays the slow consumer or the
// handshake storm on request. The orchestrator drives it over IPC.
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks'
import { createSigner } from 'fast-jwt'
import { Conn, type ConnSpec, type Proto } from './conn.js'
import { serve } from '../lib/rpc.js'
import { SECRET } from '../lib/config.js'
import { summarize } from '../lib/hist.js'

export interface ConnectArgs {
  proto: Proto
  /** Server ports; connection i goes to ports[i % ports.length], i counted across generators. */
  ports: number[]
  /** Global index of this generator's first connection (its user id) and how many it holds. */
  offset: number
  count: number
  /** Topic or room, `{id}` replaced by the connection's user id; none: handshake only. */
  topic?: string
  compression?: boolean
  ackEvery?: number
}

export interface ResumeArgs {
  topic: string
  since: string
  /** Events each connection must receive. */
  events: number
  timeoutMs: number
}

const sign = createSigner({ key: SECRET, expiresIn: 3_600_000 })
/** Handshakes in flight while opening: the listen backlog takes a few hundred. */
const OPENING_CONCURRENCY = 100

let conns: Conn[] = []
/** Opened, not yet resumed. */
let resumers: Conn[] = []
let histogram: RecordableHistogram | undefined
/** The connections `pause` stopped; the others are the healthy ones. */
const paused = new Set<Conn>()

function spec (args: ConnectArgs, index: number): ConnSpec {
  const id = String(index)
  return {
    proto: args.proto,
    port: args.ports[index % args.ports.length]!,
    token: args.proto === 'ws' ? undefined : sign({ sub: id, role: 'admin' }),
    topic: args.topic?.replace('{id}', id),
    compression: args.compression,
    ackEvery: args.ackEvery
  }
}

/** Runs `task` for 0..count-1, at most `concurrency` at once, starting none after `deadline` (epoch ms). */
async function pool (count: number, concurrency: number, task: (index: number) => Promise<void>, deadline = Infinity): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count && Date.now() < deadline) await task(next++)
  }
  await Promise.all(Array.from({ length: Math.min(count, concurrency) }, worker))
}

serve({
  async connect (args: ConnectArgs) {
    const opened: Conn[] = []
    await pool(args.count, OPENING_CONCURRENCY, async (i) => {
      const conn = new Conn(spec(args, args.offset + i))
      await conn.open()
      opened.push(conn)
    })
    conns = conns.concat(opened)
  },

  /** Opens one connection, subscribes to `topic` and returns the answer's text (the `ok`, with its `pos`); then closes. */
  async probe ({ port, topic }: { port: number, topic: string }) {
    const conn = new Conn({ proto: 'evsock', port, token: sign({ sub: 'probe', role: 'admin' }) })
    await conn.open()
    try {
      return await conn.subscribe(topic)
    } finally {
      conn.destroy()
    }
  },

  /** Opens `count` connections that subscribe to nothing yet, for `resume`. */
  async open (args: ConnectArgs) {
    const opened: Conn[] = []
    await pool(args.count, OPENING_CONCURRENCY, async (i) => {
      const conn = new Conn(spec({ ...args, topic: undefined }, args.offset + i))
      await conn.open()
      opened.push(conn)
    })
    resumers = resumers.concat(opened)
  },

  /**
   * Resumes the connections `open` opened, all at once: each sends `sub`
   * with `since`, must be answered `recovered: true`, and receives `events`
   * events, acking as it goes. Resolves with when each was done, ms after
   * the subs went out, in increasing order.
   */
  async resume (args: ResumeArgs) {
    const resuming = resumers
    resumers = []
    conns = conns.concat(resuming)
    const started = performance.now()
    const done: number[] = []
    const all = Promise.all(resuming.map(async (conn) => {
      const answer = await conn.subscribe(args.topic, args.since)
      if (!answer.startsWith('{"op":"ok"') || !answer.includes('"recovered":true')) throw new Error(`the resume was not recovered: ${answer}`)
      await conn.reached(args.events)
      done.push(performance.now() - started)
    }))
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`${done.length} of ${resuming.length} resumes done within ${args.timeoutMs} ms; ` +
        `events received: ${resuming.reduce((sum, conn) => sum + conn.events, 0)} of ${resuming.length * args.events}`)), args.timeoutMs)
    })
    try {
      await Promise.race([all, late])
    } finally {
      clearTimeout(timer)
    }
    return done.sort((a, b) => a - b)
  },

  /** CPU time of this process so far, microseconds: a generator near a whole core would be the bottleneck. */
  cpu () {
    const { user, system } = process.cpuUsage()
    return user + system
  },

  counts () {
    let events = 0
    let closed = 0
    let healthyClosed = 0
    // By the close code the server sent ('none': the socket ended without a close frame).
    const closeCodes: Record<string, number> = {}
    for (const conn of conns) {
      events += conn.events
      if (!conn.closed) continue
      closed++
      if (!paused.has(conn)) healthyClosed++
      const code = String(conn.closeCode ?? 'none')
      closeCodes[code] = (closeCodes[code] ?? 0) + 1
    }
    return { events, closed, healthyClosed, closeCodes }
  },

  /** The first `fraction` of the connections stop reading. */
  pause ({ fraction }: { fraction: number }) {
    const stopped = conns.slice(0, Math.ceil(conns.length * fraction))
    for (const conn of stopped) {
      conn.pause()
      paused.add(conn)
    }
    return stopped.length
  },

  /** Starts recording latency on every connection still reading. */
  recordLatency () {
    histogram = createHistogram()
    for (const conn of conns) conn.latency = histogram
    return null
  },

  latency () {
    for (const conn of conns) conn.latency = undefined
    return histogram === undefined ? undefined : summarize(histogram)
  },

  /** Opens and resets connections back to back for `ms`, `concurrency` at a time: handshakes per second. */
  async handshakes (args: ConnectArgs & { ms: number, concurrency: number }) {
    let done = 0
    let failed = 0
    let firstError: string | undefined
    const started = performance.now()
    await pool(Infinity, args.concurrency, async (i) => {
      const conn = new Conn(spec(args, args.offset + (i % args.count)))
      await conn.open().then(() => done++, (err: Error) => { failed++; firstError ??= err.message })
      conn.destroy()
    }, Date.now() + args.ms)
    return { done, failed, firstError, ms: performance.now() - started }
  },

  close () {
    for (const conn of conns) conn.destroy()
    conns = []
    paused.clear()
    return null
  }
})
