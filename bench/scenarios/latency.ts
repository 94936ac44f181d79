// Scenario 2: one-way latency through the brokers, publish (intended time,
// open loop) to receipt, at fractions of each peer's own fan-out rate.
import { setTimeout as sleep } from 'node:timers/promises'
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer } from '../lib/deploy.js'
import { atMost, peersOf, type Cell, type Context, type ScenarioResult, type Target } from '../lib/results.js'
import type { LatencySummary } from '../lib/hist.js'
import type { Deployment } from '../lib/deploy.js'
import type { PeerName } from '../lib/peers.js'
import { ackEvery } from './fanout.js'
import { OPEN_LOOP_SIZE, fanoutEventRate } from './rates.js'

const PEERS: PeerName[] = ['evsock-amqp-x2', 'socket.io-redis-x2']

export const ms = (us: number): string => (us / 1000).toFixed(2)

/** Publishes `rate` events/s on the fan-out topic and records the clients' latency over the measurement window. */
export async function openLoop (context: Context, deployment: Deployment, rate: number): Promise<LatencySummary> {
  await deployment.drive({ rate, size: OPEN_LOOP_SIZE, topic: FANOUT_TOPIC })
  await sleep(context.args.warmup * 1000)
  await deployment.recordLatency()
  await sleep(context.args.latencySeconds * 1000)
  const summary = await deployment.latency()
  await deployment.halt()
  return summary
}

export async function latency (context: Context): Promise<ScenarioResult> {
  const subs = context.args.subs[0]!
  const rows: Cell[][] = []
  const targets: Target[] = []
  for (const peer of peersOf(context, PEERS)) {
    await withPeer(peer, {}, async (deployment) => {
      await deployment.connect(subs, { topic: FANOUT_TOPIC, ackEvery: ackEvery(64) })
      const max = await fanoutEventRate(context, deployment, subs)
      for (const load of [...context.args.loads].sort()) {
        const rate = Math.round(max * load)
        const summary = await openLoop(context, deployment, rate)
        if (!context.openLoop.has(peer)) context.openLoop.set(peer, { rate, p99: summary.p99 })
        rows.push([peer, `${load * 100}%`, rate, rate * subs, ms(summary.p50), ms(summary.p99), ms(summary.p999), ms(summary.max)])
        if (peer === 'evsock-amqp-x2' && load === 0.5) targets.push(atMost('p99 ms through RabbitMQ at 50% load', summary.p99 / 1000, 10))
      }
    })
  }
  return {
    tables: [{
      title: `Latency, publish to receipt (open loop, ${subs} subscribers, ${OPEN_LOOP_SIZE} B)`,
      columns: ['peer', 'load', 'events/s', 'frames/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms'],
      rows
    }],
    targets
  }
}
