// Scenario 7: what the ack window costs: fan-out at window 1, 16, 64, 256,
// the clients acking at half the window.
import { FANOUT_TOPIC } from '../lib/config.js'
import { withPeer } from '../lib/deploy.js'
import { throughput } from '../lib/measure.js'
import type { Cell, Context, ScenarioResult } from '../lib/results.js'
import { ackEvery } from './fanout.js'

const BURST = 5

export async function window (context: Context): Promise<ScenarioResult> {
  const { args } = context
  const subs = args.subs[0]!
  const size = args.sizes[0]!
  const rows: Cell[][] = []
  for (const window of args.windows) {
    await withPeer('evsock-memory', { window }, async (deployment) => {
      await deployment.connect(subs, { topic: FANOUT_TOPIC, ackEvery: ackEvery(window) })
      const result = await throughput(deployment, { burst: BURST, size, topic: FANOUT_TOPIC }, args)
      rows.push([window, subs, Math.round(result.framesPerSec), result.cpuPerFrame.toFixed(2)])
    })
  }
  return {
    tables: [{ title: `Ack window (evsock-memory, burst ${BURST}, ${size} B)`, columns: ['window', 'subs', 'frames/s', 'server µs/frame'], rows }],
    targets: []
  }
}
