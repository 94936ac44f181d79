// Scenario 6: 1% of the clients stop reading while events flow at the 50%
// load of scenario 2: what the healthy clients see, what the server holds,
// and whom it closes.
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer } from '../lib/deploy.js'
import { atMost, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import type { PeerName } from '../lib/peers.js'
import { ackEvery } from './fanout.js'
import { ms, openLoop } from './latency.js'
import { fanoutEventRate } from './rates.js'

const PEERS: PeerName[] = ['evsock-amqp-x2', 'socket.io-redis-x2']
const SLOW_FRACTION = 0.01
/** The plugin's pending bound for this run, small enough for the slow-consumer policy to act within seconds. */
const MAX_PENDING = 32

const sum = (stats: Array<Record<string, number>>, key: string): number => stats.reduce((total, s) => total + (s[key] ?? 0), 0)

export async function slow (context: Context): Promise<ScenarioResult> {
  const subs = context.args.subs[0]!
  const rows: Cell[][] = []
  const targets: Target[] = []
  for (const peer of peersOf(context, PEERS)) {
    await withPeer(peer, { maxPending: MAX_PENDING }, async (deployment) => {
      await deployment.connect(subs, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })
      const reference = context.openLoop.get(peer)
      const rate = reference?.rate ?? Math.round(await fanoutEventRate(context, deployment, subs) * 0.5)
      const paused = await deployment.pause(SLOW_FRACTION)
      const before = await deployment.memory()
      const summary = await openLoop(context, deployment, rate)
      const after = await deployment.memory()
      const stats = await deployment.stats()
      const growth = (after.reduce((total, m) => total + m.rss, 0) - before.reduce((total, m) => total + m.rss, 0)) / 2 ** 20
      rows.push([peer, paused, rate, ms(summary.p50), ms(summary.p99), ms(summary.p999), growth.toFixed(1), sum(stats, 'pending'), sum(stats, 'slowConsumerCloses')])
      if (peer === 'evsock-amqp-x2' && reference !== undefined) {
        targets.push(atMost('slow consumers: healthy p99 / scenario 2 p99 at 50%', summary.p99 / reference.p99, 1.5))
      }
    })
  }
  return {
    tables: [{
      title: `Slow consumers (${SLOW_FRACTION * 100}% of ${subs} stop reading; evsock pending bound ${MAX_PENDING})`,
      columns: ['peer', 'paused', 'events/s', 'healthy p50 ms', 'healthy p99 ms', 'healthy p99.9 ms', 'server RSS growth MB', 'pending held', 'closed 4008'],
      rows
    }],
    targets
  }
}
