// Scenario 4: handshakes per second, connection to first message (the plugin's
// hello, Socket.IO's namespace connect), JWT verification included, each
// connection reset right after.
import { withPeer } from '../lib/deploy.js'
import { atLeast, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import type { PeerName } from '../lib/peers.js'

const PEERS: PeerName[] = ['ws-naive', 'socket.io', 'evsock-memory']
/** Handshakes in flight at once. */
const CONCURRENCY = 32
/** Distinct users (tokens) the generator cycles through. */
const USERS = 1000

export async function handshake (context: Context): Promise<ScenarioResult> {
  const rate = new Map<PeerName, number>()
  const rows: Cell[][] = []
  for (const peer of peersOf(context, PEERS)) {
    await withPeer(peer, {}, async (deployment) => {
      const generator = deployment.generator()
      const before = await deployment.snapshot()
      const result = await generator.call<{ done: number, failed: number, firstError?: string, ms: number }>('handshakes', {
        proto: deployment.proto, ports: deployment.ports, offset: 0, count: USERS, ms: context.args.seconds * 2000, concurrency: CONCURRENCY
      })
      const after = await deployment.snapshot()
      const perSecond = result.done / (result.ms / 1000)
      rate.set(peer, perSecond)
      rows.push([peer, Math.round(perSecond), ((after.cpu - before.cpu) / result.done).toFixed(0), result.failed, result.firstError ?? ''])
    })
  }
  const ours = rate.get('evsock-memory')
  const theirs = rate.get('socket.io')
  const targets: Target[] = ours === undefined || theirs === undefined
    ? []
    : [atLeast('handshakes/s evsock / Socket.IO (both verify a JWT)', ours / theirs, 0.8)]
  return {
    tables: [{ title: `Handshakes (${CONCURRENCY} in flight; bare ws has no auth)`, columns: ['peer', 'handshakes/s', 'server µs/handshake', 'failed', 'first error'], rows }],
    targets
  }
}
