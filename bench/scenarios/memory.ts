// Scenario 3: heap and RSS per idle connection, after full collections in the
// server process, authenticated and subscribed where the server has those.
import { setTimeout as sleep } from 'node:timers/promises'
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer, type ClientOptions } from '../lib/deploy.js'
import { atMost, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import type { PeerName } from '../lib/peers.js'
import type { PeerOptions } from '../server/peer.js'

interface Variant {
  label: string
  peer: PeerName
  options?: Omit<PeerOptions, 'instance'>
  client?: ClientOptions
}

const subscribed = { topic: FANOUT_TOPIC }
const VARIANTS: Variant[] = [
  { label: 'bare ws', peer: 'ws-naive' },
  { label: '@fastify/websocket alone', peer: 'fastify-ws' },
  { label: 'Socket.IO (auth, room)', peer: 'socket.io', client: subscribed },
  { label: 'evsock', peer: 'evsock-memory', client: subscribed },
  { label: 'evsock, compression on', peer: 'evsock-memory', options: { compression: true }, client: { ...subscribed, compression: true } }
]

export async function memory (context: Context): Promise<ScenarioResult> {
  const { conns } = context.args
  const peers = peersOf(context, [...new Set(VARIANTS.map((v) => v.peer))])
  const perConn = new Map<string, { heap: number, rss: number }>()
  const rows: Cell[][] = []
  for (const variant of VARIANTS.filter((v) => peers.includes(v.peer))) {
    await withPeer(variant.peer, variant.options ?? {}, async (deployment) => {
      const [before] = await deployment.memory()
      await deployment.connect(conns, variant.client)
      // Let the last handshakes' garbage and timers settle before reading.
      await sleep(500)
      const [after] = await deployment.memory()
      const heap = (after!.heap - before!.heap) / conns
      const rss = (after!.rss - before!.rss) / conns
      perConn.set(variant.label, { heap, rss })
      rows.push([variant.label, conns, (heap / 1024).toFixed(2), (rss / 1024).toFixed(2)])
    })
  }
  return {
    tables: [{ title: 'Memory per idle connection', columns: ['server', 'connections', 'heap KB/conn', 'RSS KB/conn'], rows }],
    targets: targets(perConn)
  }
}

function targets (perConn: Map<string, { heap: number, rss: number }>): Target[] {
  const ours = perConn.get('evsock')
  const floor = perConn.get('@fastify/websocket alone')
  const socketIo = perConn.get('Socket.IO (auth, room)')
  if (ours === undefined) return []
  const out: Target[] = []
  for (const kind of ['heap', 'rss'] as const) {
    if (floor !== undefined) out.push(atMost(`memory ${kind} evsock / @fastify/websocket alone`, ours[kind] / floor[kind], 1.3))
    if (socketIo !== undefined) out.push(atMost(`memory ${kind} evsock / Socket.IO`, ours[kind] / socketIo[kind], 0.99))
  }
  return out
}
