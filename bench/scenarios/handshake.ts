// Scenario 4: handshakes per second, connection to first message (the plugin's
// hello, Socket.IO's namespace connect), JWT verification included, each
// connection reset right after. Each round starts the peers afresh, in turn,
// and warms each with a short storm first.
import { withPeer } from '../lib/deploy.js'
import { atLeast, headline, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import { interleaved, median, mediansOf, ratios, roundsSpread, spreadCell } from '../lib/sampled.js'
import type { PeerName } from '../lib/peers.js'

const PEERS: PeerName[] = ['ws-naive', 'socket.io', 'evsock-memory']
/** Handshakes in flight at once. */
const CONCURRENCY = 32
/** Distinct users (tokens) the generator cycles through. */
const USERS = 1000

interface Storm { perSecond: number, cpuPerHandshake: number, failed: number, firstError: string }

/**
 * A storm this long, unmeasured, before the measured one: a fresh server's
 * first handshakes run its code unoptimised, and the peers' code warms at
 * different speeds.
 */
const WARM_MS = 400

async function storm (context: Context, peer: PeerName): Promise<Storm> {
  return await withPeer(peer, {}, async (deployment) => {
    const generator = deployment.generator()
    const handshakes = (ms: number): Promise<{ done: number, failed: number, firstError?: string, ms: number }> =>
      generator.call('handshakes', { proto: deployment.proto, ports: deployment.ports, offset: 0, count: USERS, ms, concurrency: CONCURRENCY })
    await handshakes(WARM_MS)
    const before = await deployment.snapshot()
    const result = await handshakes(context.args.seconds * 2000)
    const after = await deployment.snapshot()
    return { perSecond: result.done / (result.ms / 1000), cpuPerHandshake: (after.cpu - before.cpu) / result.done, failed: result.failed, firstError: result.firstError ?? '' }
  })
}

export async function handshake (context: Context): Promise<ScenarioResult> {
  const peers = peersOf(context, PEERS)
  const samples = await interleaved(peers, context.args.rounds, (peer) => peer, (peer) => storm(context, peer))
  const rows: Cell[][] = peers.map((peer) => {
    const rounds = samples.get(peer)!
    const rate = rounds.map((r) => r.perSecond)
    return [peer, Math.round(median(rate)), spreadCell(rate), median(rounds.map((r) => r.cpuPerHandshake)).toFixed(0),
      rounds.reduce((total, r) => total + r.failed, 0), rounds.find((r) => r.firstError !== '')?.firstError ?? '']
  })
  const ours = samples.get('evsock-memory')
  const theirs = samples.get('socket.io')
  const targets: Target[] = []
  if (ours !== undefined && theirs !== undefined) {
    const rounds = ratios(ours.map((r) => r.perSecond), theirs.map((r) => r.perSecond))
    targets.push(headline(atLeast('handshakes/s evsock / Socket.IO (both verify a JWT)', median(rounds), 0.8, undefined, roundsSpread(rounds))))
  }
  return {
    tables: [{
      title: `Handshakes (${CONCURRENCY} in flight; bare ws has no auth; ${mediansOf(context.args.rounds)}, peers in turn)`,
      columns: ['peer', 'handshakes/s', 'spread %', 'server µs/handshake', 'failed', 'first error'],
      rows
    }],
    targets
  }
}
