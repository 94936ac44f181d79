// Scenario 6: slow consumers at a load the healthy clients sustain. Each
// round starts the peer afresh and measures the healthy clients' latency
// twice at the same fixed rate: with every client reading, then with 1% of
// them stopped. The plugin must cut the stalled ones (4008) and none of the
// others, and their latency must stay near that of the run without stalls.
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer } from '../lib/deploy.js'
import { fixedRate, warmUp, type RatePoint } from '../lib/measure.js'
import { atMost, headline, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import { interleaved, median, mediansOf, ratios, roundsSpread, spreadCell } from '../lib/sampled.js'
import type { PeerName } from '../lib/peers.js'
import { ackEvery } from './fanout.js'
import { ms } from './latency.js'

const PEERS: PeerName[] = ['evsock-amqp-x2', 'socket.io-redis-x2']
const SUBS = 1000
const SLOW_FRACTION = 0.01
const SIZE = 128
/** The plugin's ack window in this run, and its pending bound, small enough for the slow-consumer policy to act within seconds. */
const WINDOW = 64
const MAX_PENDING = 16
/**
 * Events/s: 30,000 frames/s to 1,000 clients, under half the generator's
 * core (the latency table's generator CPU) and about half what Socket.IO
 * with its Redis adapter fans out one event at a time (the burst-1 table).
 */
const RATE = 30
/**
 * A stalled client is cut after WINDOW + MAX_PENDING events: each window
 * lasts a quarter as long again. Both windows last as long: a p99 over more
 * events would reach further into the tail.
 */
const STALLED_SECONDS = 1.25 * (WINDOW + MAX_PENDING) / RATE
/**
 * The fresh deployment runs at the point's rate this long, unmeasured, before
 * the window without stalls: measured cold (code not yet optimised), that
 * window read slower than the one with stalls.
 */
const COLD_START_SECONDS = 1

interface Round {
  without: RatePoint
  with: RatePoint
  paused: number
  /** Closed with 4008 by the servers (stalled or not). */
  cut: number
  /** Clients that never stopped reading and were closed all the same. */
  healthyClosed: number
  /** Servers' RSS growth over the stalled window, MB. */
  growth: number
}

const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0)
const windowSeconds = (context: Context): number => Math.max(context.args.latencySeconds, STALLED_SECONDS)

async function round (context: Context, peer: PeerName): Promise<Round> {
  const { warmup } = context.args
  const seconds = windowSeconds(context)
  return await withPeer(peer, { maxPending: MAX_PENDING, window: WINDOW }, async (deployment) => {
    await deployment.connect(SUBS, { topic: FANOUT_TOPIC, ackEvery: ackEvery(WINDOW) })
    const drive = { rate: RATE, size: SIZE, topic: FANOUT_TOPIC }
    await warmUp(deployment, drive, COLD_START_SECONDS)
    // Both windows start from a heap just collected (the memory reading runs
    // full collections). Before the stalled one only, as before, the handshakes'
    // garbage fell to collect in the window without stalls: with 3 s of
    // warm-up, its p99 was still twice the stalled one's (0.46).
    await deployment.memory()
    const without = await fixedRate(deployment, drive, warmup, seconds)
    const paused = await deployment.pause(SLOW_FRACTION)
    const before = await deployment.memory()
    const stalled = await fixedRate(deployment, drive, warmup, seconds)
    const after = await deployment.memory()
    const [stats, snapshot] = await Promise.all([deployment.stats(), deployment.snapshot()])
    return {
      without,
      with: stalled,
      paused,
      cut: sum(stats.map((s) => s.slowConsumerCloses ?? 0)),
      healthyClosed: snapshot.healthyClosed,
      growth: (sum(after.map((m) => m.rss)) - sum(before.map((m) => m.rss))) / 2 ** 20
    }
  })
}

export async function slow (context: Context): Promise<ScenarioResult> {
  const peers = peersOf(context, PEERS)
  const samples = await interleaved(peers, context.args.rounds, (peer) => peer, (peer) => round(context, peer))
  const rows: Cell[][] = []
  const targets: Target[] = []
  for (const peer of peers) {
    const rounds = samples.get(peer)!
    const p99 = ratios(rounds.map((r) => r.with.summary.p99), rounds.map((r) => r.without.summary.p99))
    const healthyClosed = Math.max(...rounds.map((r) => r.healthyClosed))
    const at = (read: (r: Round) => number): number => median(rounds.map(read))
    rows.push([peer, at((r) => r.paused), RATE, ms(at((r) => r.without.summary.p50)), ms(at((r) => r.without.summary.p99)),
      ms(at((r) => r.with.summary.p50)), ms(at((r) => r.with.summary.p99)), ms(at((r) => r.with.summary.p999)),
      median(p99).toFixed(2), spreadCell(p99), at((r) => r.growth).toFixed(1), at((r) => r.cut), healthyClosed])
    if (peer.startsWith('evsock')) {
      targets.push(headline(atMost(`slow consumers (${peer}): healthy p99 with ${SLOW_FRACTION * 100}% stalled / without`, median(p99), 1.5, undefined, roundsSpread(p99))))
      targets.push(atMost(`slow consumers (${peer}): healthy clients cut, the most in a round`, healthyClosed, 0))
    }
  }
  const sampled = `${mediansOf(context.args.rounds)}, each on a fresh deployment, peers in turn`
  return {
    tables: [{
      title: `Slow consumers (${SLOW_FRACTION * 100}% of ${SUBS} stop reading, ${RATE} events/s of ${SIZE} B; evsock window ${WINDOW}, pending bound ${MAX_PENDING}; ${sampled})`,
      notes: [`Without: every client reading; with: the same deployment after ${SLOW_FRACTION * 100}% stopped. Each window lasts ${windowSeconds(context).toFixed(1)} s, ` +
        'long enough for the plugin to reach its pending bound. Healthy clients are those that never stopped; "healthy closed" is the most in one round, and must be 0.'],
      columns: ['peer', 'stalled', 'events/s', 'without p50 ms', 'without p99 ms', 'with p50 ms', 'with p99 ms', 'with p99.9 ms', 'p99 with / without', 'spread %',
        'server RSS growth MB', 'closed 4008', 'healthy closed'],
      rows
    }],
    targets
  }
}
