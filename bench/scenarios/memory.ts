// Scenario 3: heap and RSS per idle connection, after full collections in the
// server process, authenticated and subscribed where the server has those.
// Each round starts every variant afresh, in turn.
import { setTimeout as sleep } from 'node:timers/promises'
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer, type ClientOptions } from '../lib/deploy.js'
import { atMost, headline, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import { interleaved, median, mediansOf, ratios, roundsSpread, spreadCell } from '../lib/sampled.js'
import type { PeerName } from '../lib/peers.js'
import type { PeerOptions } from '../server/peer.js'

interface Variant {
  label: string
  peer: PeerName
  options?: Omit<PeerOptions, 'instance'>
  client?: ClientOptions
}

interface PerConn { heap: number, rss: number }

const subscribed = { topic: FANOUT_TOPIC }
const VARIANTS: Variant[] = [
  { label: 'bare ws', peer: 'ws-naive' },
  { label: '@fastify/websocket alone', peer: 'fastify-ws' },
  { label: 'Socket.IO (auth, room)', peer: 'socket.io', client: subscribed },
  { label: 'evsock', peer: 'evsock-memory', client: subscribed },
  { label: 'evsock, compression on', peer: 'evsock-memory', options: { compression: true }, client: { ...subscribed, compression: true } }
]

async function perConnection (conns: number, variant: Variant): Promise<PerConn> {
  return await withPeer(variant.peer, variant.options ?? {}, async (deployment) => {
    const [before] = await deployment.memory()
    await deployment.connect(conns, variant.client)
    // Let the last handshakes' garbage and timers settle before reading.
    await sleep(500)
    const [after] = await deployment.memory()
    return { heap: (after!.heap - before!.heap) / conns, rss: (after!.rss - before!.rss) / conns }
  })
}

export async function memory (context: Context): Promise<ScenarioResult> {
  const { conns, rounds } = context.args
  const peers = peersOf(context, [...new Set(VARIANTS.map((v) => v.peer))])
  const variants = VARIANTS.filter((v) => peers.includes(v.peer))
  const samples = await interleaved(variants, rounds, (v) => v.label, (v) => perConnection(conns, v))
  const rows: Cell[][] = variants.map(({ label }) => {
    const own = samples.get(label)!
    const heap = own.map((s) => s.heap)
    return [label, conns, (median(heap) / 1024).toFixed(2), spreadCell(heap), (median(own.map((s) => s.rss)) / 1024).toFixed(2)]
  })
  return {
    tables: [{
      title: `Memory per idle connection (${mediansOf(rounds)}, each on a fresh server)`,
      columns: ['server', 'connections', 'heap KB/conn', 'spread %', 'RSS KB/conn'],
      rows
    }],
    targets: targets(samples)
  }
}

function targets (samples: Map<string, PerConn[]>): Target[] {
  const ours = samples.get('evsock')
  if (ours === undefined) return []
  const out: Target[] = []
  // Variant, its name in the target, goal.
  const against: Array<[string, string, number]> = [['@fastify/websocket alone', '@fastify/websocket alone', 1.3], ['Socket.IO (auth, room)', 'Socket.IO', 0.99]]
  for (const kind of ['heap', 'rss'] as const) {
    for (const [label, name, goal] of against) {
      const theirs = samples.get(label)
      if (theirs === undefined) continue
      const rounds = ratios(ours.map((s) => s[kind]), theirs.map((s) => s[kind]))
      const target = atMost(`memory ${kind} evsock / ${name}`, median(rounds), goal, undefined, roundsSpread(rounds))
      out.push(kind === 'heap' ? headline(target) : target)
    }
  }
  return out
}
