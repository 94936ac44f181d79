// Scenario 8: the `history` option (docs/protocol.md section 6): what it costs
// the live path, and how fast resuming clients are replayed what they missed.
import type { Context, ScenarioResult } from '../lib/results.js'
import { historyLive } from './history-live.js'
import { historyReplay } from './history-replay.js'

export async function history (context: Context): Promise<ScenarioResult> {
  const live = await historyLive(context)
  const replay = await historyReplay(context)
  // --peers may leave a part with nothing to measure.
  return { tables: [...live, ...replay].filter((table) => table.rows.length > 0), targets: [] }
}
