// Scenario 1: one topic, every client subscribed, bursts of events per tick.
// Every peer of a subscriber count runs at once; each point is measured
// `--rounds` times, the peers in turn (bench/lib/sampled.ts).
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeers, type Deployment } from '../lib/deploy.js'
import { throughput, type Throughput } from '../lib/measure.js'
import { atLeast, fanoutKey, headline, peersOf, type Cell, type Context, type ScenarioResult, type Table, type Target } from '../lib/results.js'
import { interleaved, median, mediansOf, ratios, roundsSpread, spreadCell } from '../lib/sampled.js'
import type { PeerName } from '../lib/peers.js'

/** ws-coalesced, the ceiling of corked writes, is no target's peer: `--peers` adds it, outside the 10-minute suite. */
const PEERS: PeerName[] = ['ws-naive', 'socket.io', 'socket.io-redis-x2', 'evsock-memory', 'evsock-amqp-x2']

/** The plugin's clients ack as the bundled client does: once half the window is unacknowledged. */
export const ackEvery = (window: number): number => Math.max(1, Math.floor(window / 2))

/** What each point measured, by peer/subs/burst/size (fanoutKey): frames/s of each round, and medians of the rest. */
export interface Measured {
  frames: Map<string, number[]>
  /** Points whose clients were closed or whose publishes failed, said under the table: a rate means nothing without it. */
  troubles: string[]
  /** `broker`: undefined when a reading was missing (a peer without RabbitMQ reads the machine's node all the same). */
  points: Map<string, { server: number, generator: number, cpuPerFrame: number, broker: number | undefined }>
}

/**
 * The points of one subscriber count: every burst at the first size; the
 * bursts above 1 at the other sizes, with the first subscriber count only.
 * One event at a time is one write per socket whatever its size; and the
 * suite must fit in 10 minutes.
 */
function pointsOf (context: Context, subs: number): Array<{ size: number, burst: number }> {
  const [first, ...others] = context.args.sizes
  return [
    ...context.args.bursts.map((burst) => ({ size: first!, burst })),
    ...(subs === context.args.subs[0] ? others : []).flatMap((size) => context.args.bursts.filter((burst) => burst > 1).map((burst) => ({ size, burst })))
  ]
}

/**
 * Connects `subs` clients to each deployment and measures `measuring` (by
 * default the points of the fan-out suite), the deployments in turn; adds a
 * row per peer and point to `rows`.
 */
export async function measureSubs (context: Context, subs: number, deployments: Deployment[], { frames, points, troubles }: Measured, rows: Cell[][],
  measuring = pointsOf(context, subs)): Promise<void> {
  // One peer at a time: the handshakes of all of them would share the generator core.
  for (const deployment of deployments) await deployment.connect(subs, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })
  for (const { size, burst } of measuring) {
    const samples = await interleaved<Deployment, Throughput>(deployments, context.args.rounds, (d) => d.name,
      (d) => throughput(d, { burst, size, topic: FANOUT_TOPIC }, context.args))
    for (const { name } of deployments) {
      const rounds = samples.get(name)!
      const key = fanoutKey(name, subs, burst, size)
      const framesPerSec = rounds.map((r) => r.framesPerSec)
      const cpuPerFrame = median(rounds.map((r) => r.cpuPerFrame))
      frames.set(key, framesPerSec)
      const broker = rounds.some((r) => r.broker === undefined) ? undefined : median(rounds.map((r) => r.broker!))
      points.set(key, { cpuPerFrame, server: median(rounds.map((r) => r.server)), generator: median(rounds.map((r) => r.generator)), broker })
      rows.push([name, subs, burst, size, Math.round(median(framesPerSec)), spreadCell(framesPerSec), cpuPerFrame.toFixed(2)])
      const worst = rounds.reduce((a, b) => (b.closed > a.closed ? b : a))
      const failed = Math.max(...rounds.map((r) => r.failed))
      if (worst.closed > 0 || failed > 0) {
        const codes = Object.entries(worst.closeCodes).map(([code, count]) => `${count} with ${code}`).join(', ')
        troubles.push(`${name}, ${subs} subscribers, bursts of ${burst}, ${size} B: ${worst.closed} of its clients closed${codes === '' ? '' : ` (${codes})`} and ${failed} publishes failed by the end of a round (the most in one).`)
      }
    }
  }
}

export async function fanout (context: Context): Promise<ScenarioResult> {
  const { args } = context
  const peers = peersOf(context, PEERS)
  const rows: Cell[][] = []
  const measured: Measured = { frames: new Map(), points: new Map(), troubles: [] }
  for (const subs of args.subs) {
    await withPeers(peers, {}, (deployments) => measureSubs(context, subs, deployments, measured, rows))
  }
  const rounds = `${mediansOf(args.rounds)}, peers in turn`
  return {
    tables: [
      {
        title: `Fan-out: one topic, every client subscribed (${rounds})`,
        notes: ['Spread: (max - min) / median of the rounds\' frames/s, percent.', ...measured.troubles],
        columns: ['peer', 'subs', 'burst', 'bytes', 'frames/s', 'spread %', 'server µs/frame'],
        rows
      },
      burstOne(context, peers, measured)
    ].filter((table) => table.rows.length > 0),
    targets: targets(context, measured.frames)
  }
}

/** The median ratio of two peers' rounds at a point, and its rounds; undefined when either was not measured. */
function ratioAt (frames: Measured['frames'], key: (peer: string) => string, ours: string, theirs: string): number[] | undefined {
  const a = frames.get(key(ours))
  const b = frames.get(key(theirs))
  return a === undefined || b === undefined ? undefined : ratios(a, b)
}

/**
 * Burst 1, one event at a time, beside the bursts: what most apps publish.
 * Every peer then makes one socket write per subscriber per event, and the
 * clients one read per frame; the notes say which side was at its limit.
 */
function burstOne (context: Context, peers: PeerName[], { frames, points }: Measured): Table {
  const size = context.args.sizes[0]!
  const bursts = context.args.bursts.filter((burst) => burst > 1)
  const rows: Cell[][] = []
  const notes: string[] = []
  if (!context.args.bursts.includes(1)) return { title: 'Burst 1', columns: [], rows }
  for (const subs of context.args.subs) {
    const key = (burst: number) => (peer: string): string => fanoutKey(peer, subs, burst, size)
    for (const peer of peers) {
      const one = frames.get(key(1)(peer))
      const point = points.get(key(1)(peer))
      if (one === undefined || point === undefined) continue
      const vsWs = ratioAt(frames, key(1), peer, 'ws-naive')
      rows.push([peer, subs, Math.round(median(one)), ...bursts.map((burst) => Math.round(median(frames.get(key(burst)(peer)) ?? [NaN]))),
        vsWs === undefined ? '-' : median(vsWs).toFixed(2), vsWs === undefined ? '-' : spreadCell(vsWs),
        point.cpuPerFrame.toFixed(2), point.server.toFixed(0), point.generator.toFixed(0)])
    }
    const ws = points.get(key(1)('ws-naive'))
    const coalesced = points.get(key(Math.max(...bursts))('ws-coalesced'))
    if (ws !== undefined) {
      notes.push(`${subs.toLocaleString('en-US')} subscribers: bare ws writing one pre-framed buffer per socket spends ${ws.cpuPerFrame.toFixed(2)} µs of server CPU per frame at burst 1` +
        (coalesced === undefined ? '' : `, against ${coalesced.cpuPerFrame.toFixed(2)} µs with ${Math.max(...bursts)} frames corked into one write per socket (ws-coalesced)`) +
        `: the socket write, one system call per socket per event, is the cost of burst 1, for every peer. Its server core ran at ${ws.server.toFixed(0)}% and the load generator's at ${ws.generator.toFixed(0)}%.`)
    }
  }
  return {
    title: `Burst 1: one event at a time, beside the bursts (${size} B; frames/s, medians of the rounds; CPU in % of one core at burst 1)`,
    notes,
    columns: ['peer', 'subs', 'burst 1', ...bursts.map((burst) => `burst ${burst}`), 'burst 1 / bare ws', 'spread %', 'server µs/frame', 'server CPU %', 'generator CPU %'],
    rows
  }
}

/** Bursts of 5 or more: the plugin against Socket.IO (2x) and against the naive ws ceiling (1x). */
function targets (context: Context, frames: Measured['frames']): Target[] {
  const out: Target[] = []
  for (const subs of context.args.subs) {
    for (const size of context.args.sizes) {
      for (const burst of context.args.bursts.filter((b) => b >= 5)) {
        const key = (peer: string): string => fanoutKey(peer, subs, burst, size)
        const where = `${subs} subs, burst ${burst}, ${size} B`
        const pairs: Array<[string, string, number]> = [
          ['evsock-memory', 'socket.io', 2],
          ['evsock-amqp-x2', 'socket.io-redis-x2', 2],
          ['evsock-memory', 'ws-naive', 1]
        ]
        for (const [ours, theirs, goal] of pairs) {
          const rounds = ratioAt(frames, key, ours, theirs)
          if (rounds === undefined) continue
          const target = atLeast(`fan-out ${ours} / ${theirs}, ${where}`, median(rounds), goal, undefined, roundsSpread(rounds))
          out.push(subs === context.args.subs[0] && size === context.args.sizes[0] && burst === 5 ? headline(target) : target)
        }
      }
    }
  }
  return out
}
