// Scenario 5: every connection on its own `user.<id>` topic, events to random
// users. With RabbitMQ an instance only consumes the events of users it holds;
// with the Socket.IO Redis adapter every instance consumes every event.
import { withPeer } from '../lib/deploy.js'
import { throughput } from '../lib/measure.js'
import { peersOf, type Cell, type Context, type ScenarioResult } from '../lib/results.js'
import type { PeerName } from '../lib/peers.js'
import { ackEvery } from './fanout.js'

const PEERS: PeerName[] = ['socket.io-redis-x2', 'evsock-amqp-x2']
const BURST = 20

export async function targeted (context: Context): Promise<ScenarioResult> {
  const { args } = context
  const size = args.sizes[0]!
  const rows: Cell[][] = []
  for (const peer of peersOf(context, PEERS)) {
    await withPeer(peer, {}, async (deployment) => {
      await deployment.connect(args.conns, { topic: 'user.{id}', ackEvery: ackEvery(64) })
      const before = await deployment.stats()
      const result = await throughput(deployment, { burst: BURST, size, topic: 'user', users: args.conns }, args)
      const after = await deployment.stats()
      // Messages each instance took from the broker, per event published.
      const consumed = after.map((s, i) => (((s.consumed ?? 0) - (before[i]?.consumed ?? 0)) / result.published).toFixed(2))
      rows.push([peer, args.conns, Math.round(result.framesPerSec), result.cpuPerFrame.toFixed(2), consumed.join(' / ')])
    })
  }
  return {
    tables: [{
      title: `Targeted: each connection on user.<id>, events to random users (burst ${BURST}, ${size} B)`,
      columns: ['peer', 'connections', 'deliveries/s', 'server µs/delivery', 'consumed per event, each instance'],
      rows
    }],
    targets: []
  }
}
