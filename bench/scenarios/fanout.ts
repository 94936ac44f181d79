// Scenario 1: one topic, every client subscribed, bursts of events per tick.
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer } from '../lib/deploy.js'
import { throughput } from '../lib/measure.js'
import { atLeast, fanoutKey, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import type { PeerName } from '../lib/peers.js'

const PEERS: PeerName[] = ['ws-naive', 'ws-coalesced', 'socket.io', 'socket.io-redis-x2', 'evsock-memory', 'evsock-amqp-x2']

/** The plugin's clients ack as the bundled client does: once half the window is unacknowledged. */
export const ackEvery = (window: number): number => Math.max(1, Math.floor(window / 2))

export async function fanout (context: Context): Promise<ScenarioResult> {
  const { args } = context
  const rows: Cell[][] = []
  for (const subs of args.subs) {
    for (const peer of peersOf(context, PEERS)) {
      await withPeer(peer, {}, async (deployment) => {
        await deployment.connect(subs, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })
        const points = args.sizes.flatMap((size) => args.bursts.map((burst) => ({ size, burst })))
        for (const [i, { size, burst }] of points.entries()) {
          const result = await throughput(deployment, { burst, size, topic: FANOUT_TOPIC }, args, i === points.length - 1)
          context.fanout.set(fanoutKey(peer, subs, burst, size), result.framesPerSec)
          rows.push([peer, subs, burst, size, Math.round(result.framesPerSec), result.cpuPerFrame.toFixed(2)])
        }
      })
    }
  }
  return {
    tables: [{ title: 'Fan-out: one topic, every client subscribed', columns: ['peer', 'subs', 'burst', 'bytes', 'frames/s', 'server µs/frame'], rows }],
    targets: targets(context)
  }
}

/** Bursts of 5 or more: the plugin against Socket.IO (2x) and against the naive ws ceiling (1x). */
function targets (context: Context): Target[] {
  const out: Target[] = []
  const ratio = (a: string, b: string, key: (peer: string) => string): number | undefined => {
    const x = context.fanout.get(key(a))
    const y = context.fanout.get(key(b))
    return x === undefined || y === undefined ? undefined : x / y
  }
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
          const value = ratio(ours, theirs, key)
          if (value !== undefined) out.push(atLeast(`fan-out ${ours} / ${theirs}, ${where}`, value, goal))
        }
      }
    }
  }
  return out
}
