import { test } from 'tap'
import WebSocket from 'ws'
import { openClient, startServer, type TestServer } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// Load on history and resume (docs/protocol.md section 6, "Live delivery to
// every other connection goes first"): 10,000 retained events replayed into
// 50 sockets at once (ten want them all, forty one topic in seven), while a
// live subscriber's latency is measured. The replaying clients are lean (they
// count, check the order and ack every half window) so that the test process
// spends its time in the server.

const RETAINED = 10_000
const WINDOW = 64

/** A client that resumes one pattern and only counts what it gets, checking the order. */
class Replayer {
  readonly ws: WebSocket
  count = 0
  lastN = -1
  outOfOrder = 0
  recovered: unknown
  /** Resolves once the hello came. */
  readonly opened: Promise<void>

  constructor (server: TestServer) {
    this.ws = new WebSocket(server.url, [], { headers: { authorization: `Bearer ${server.sign({ sub: 'replayer', role: 'admin' })}` } })
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('error', reject)
      this.ws.on('message', (raw: Buffer) => {
        const message = JSON.parse(raw.toString()) as { op: string, seq: number, data: { n: number }, recovered?: unknown }
        if (message.op === 'hello') resolve()
        if (message.op === 'ok') this.recovered = message.recovered
        if (message.op !== 'event') return
        if (message.data.n <= this.lastN) this.outOfOrder++
        this.lastN = message.data.n
        this.count++
        if (message.seq % (WINDOW / 2) === 0) this.ws.send(JSON.stringify({ op: 'ack', seq: message.seq }))
      })
    })
  }

  resume (topic: string, since: string): void {
    this.ws.send(JSON.stringify({ op: 'sub', id: 1, topic, since }))
  }
}

/** `count` replayers, open, then resuming `topic` all in one turn, as after a server restart behind a balancer. */
async function replayers (t: Parameters<typeof startServer>[0], server: TestServer, count: number, topic: string, since: string): Promise<Replayer[]> {
  const all = Array.from({ length: count }, () => new Replayer(server))
  t.teardown(() => { for (const replayer of all) replayer.ws.terminate() })
  await within(Promise.all(all.map(async (replayer) => await replayer.opened)), { what: `${count} sockets open` })
  for (const replayer of all) replayer.resume(topic, since)
  return all
}

/** A live subscriber to `live.*`, sent a tick every 20 ms: how long after it was due each arrived. */
async function liveProbe (t: Parameters<typeof startServer>[0], server: TestServer): Promise<{ stop: () => Promise<number[]> }> {
  const live = await openClient(t, server, { sub: 'live' })
  live.ackEach()
  await live.subscribe('live.*')
  const latencies: number[] = []
  live.ws.on('message', (raw: Buffer) => {
    const message = JSON.parse(raw.toString()) as { op: string, data: { at: number } }
    if (message.op === 'event') latencies.push(Date.now() - message.data.at)
  })
  let sent = 0
  const failures: unknown[] = []
  // Each tick is stamped with when it was due: a tick the event loop could
  // not get to in time counts its wait (the ticks it missed meanwhile are skipped, not piled up).
  let due = Date.now()
  let ticker: NodeJS.Timeout | undefined
  const tick = (): void => {
    sent++
    server.app.publish('live.tick', { at: due }).catch((err: unknown) => { failures.push(err) })
    due = Math.max(due + 20, Date.now())
    ticker = setTimeout(tick, Math.max(0, due - Date.now()))
  }
  tick()
  t.teardown(() => clearTimeout(ticker))
  return {
    stop: async () => {
      clearTimeout(ticker)
      if (failures.length > 0) throw failures[0]
      await waitFor(() => latencies.length === sent, { what: 'every live tick', detail: () => `${latencies.length} of ${sent}` })
      return latencies
    }
  }
}

async function loaded (t: Parameters<typeof startServer>[0], retained = RETAINED): Promise<{ server: TestServer, since: string }> {
  const server = await startServer(t, { history: true, window: WINDOW, maxConnections: 1000 })
  await server.app.publish('load.start', { n: -1 })
  const probe = await openClient(t, server, { sub: 'probe' })
  const { pos } = await probe.subscribe('probe.never')
  probe.ws.terminate()
  const filler = 'x'.repeat(100)
  for (let n = 0; n < retained; n++) {
    await server.app.publish(`load.${n % 7}`, { n, filler })
    // The server's sockets get a turn now and then (the probe's handshake, its heartbeat).
    if (n % 1000 === 999) await new Promise((resolve) => setImmediate(resolve))
  }
  return { server, since: pos as string }
}

function percentile (values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number
}

test('50 sockets replaying from 10,000 retained events: each gets its own once and in order, memory bounded, a live subscriber is still served', async (t) => {
  const { server, since } = await loaded(t)
  const heapBefore = process.memoryUsage().heapUsed
  const probe = await liveProbe(t, server)
  const started = Date.now()
  const everything = await replayers(t, server, 10, 'load.#', since)
  const oneInSeven = await replayers(t, server, 40, 'load.0', since)
  const owed = (replayer: Replayer): number => everything.includes(replayer) ? RETAINED : Math.ceil(RETAINED / 7)
  const all = [...everything, ...oneInSeven]
  let heapPeak = 0
  await waitFor(() => {
    heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed)
    return all.every((replayer) => replayer.count >= owed(replayer))
  }, { what: 'every replay to finish', timeoutMs: 60_000, detail: () => all.map((replayer) => replayer.count).join(' ') })
  const latencies = await probe.stop()
  const took = Date.now() - started
  t.comment(`replays took ${took} ms; live latency p50 ${percentile(latencies, 0.5)} ms, p99 ${percentile(latencies, 0.99)} ms, max ${Math.max(...latencies)} ms over ${latencies.length} ticks; heap +${Math.round((heapPeak - heapBefore) / 2 ** 20)} MiB at the peak`)
  t.ok(all.every((replayer) => replayer.recovered === true), 'every resume recovered')
  t.same(all.filter((replayer) => replayer.outOfOrder > 0 || replayer.count !== owed(replayer)).map((replayer) => `${replayer.count} events, ${replayer.outOfOrder} out of order`), [], 'every stream complete, once, in order')
  t.ok(Math.max(...latencies) < 2000, `a live tick never waited 2 s behind the replays (max ${Math.max(...latencies)} ms)`)
  t.ok(heapPeak - heapBefore < 256 * 2 ** 20, 'heap growth under 256 MiB')
})

test('16 sockets resuming a pattern that matches none of 30,000 retained events: their scans do not stall the event loop', async (t) => {
  const { server, since } = await loaded(t, 30_000)
  // The one event they match, after all those they do not: each gets it once its scan is over.
  await server.app.publish('rare.end', { n: 30_000 })
  const probe = await liveProbe(t, server)
  const all = await replayers(t, server, 16, 'rare.*', since)
  await waitFor(() => all.every((replayer) => replayer.count === 1), { what: 'every scan to finish', timeoutMs: 60_000 })
  const latencies = await probe.stop()
  t.comment(`live latency p50 ${percentile(latencies, 0.5)} ms, p99 ${percentile(latencies, 0.99)} ms, max ${Math.max(...latencies)} ms over ${latencies.length} ticks`)
  t.ok(Math.max(...latencies) < 2000, `a live tick never waited 2 s behind the scans (max ${Math.max(...latencies)} ms)`)
})
