import t from 'tap'
import { requireBroker } from './helpers/broker.js'
import { finish, flowing, startScenario } from './helpers/history-scenario.js'
import type { RecordingClient } from './helpers/resuming-client.js'
import { waitFor } from './helpers/wait.js'

// Fault (d) of docs/protocol.md section 6: a handler stalls (its promise
// stays pending), the client's acks stop, the server's small window and
// pending queue fill and it closes the client with 4008; the handler then
// finishes, and the client resumes and catches up. Twice.

const STALLS = 2
const WINDOW = 16

if (await requireBroker(t)) {
  t.test('a stalled handler gets the client closed with 4008, twice: it resumes, catches up, and its handlers see every event exactly once, in order', async (t) => {
    // The stall lasts until the close it provokes (bounded, should the close never come).
    let release: (() => void) | undefined
    let seen = 0
    const stallAt = [400, 1400]
    const scenario = await startScenario(t, {
      instances: 1,
      options: { window: WINDOW, maxPendingEvents: 4 * WINDOW },
      clients: [{
        patterns: ['orders.#', '*.*.paid'],
        format: 'json',
        onEvent: (pattern) => {
          if (pattern !== 'orders.#' || !stallAt.includes(++seen)) return
          return new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 15_000)
            release = () => { clearTimeout(timer); resolve() }
          })
        }
      }]
    })
    const client = scenario.clients[0] as RecordingClient
    client.client.on('disconnect', () => { release?.() })
    for (let stall = 1; stall <= STALLS; stall++) {
      await waitFor(() => client.disconnects.length >= stall, { what: `the close after stall ${stall}`, timeoutMs: 20_000, detail: () => `${seen} events on orders.#; ${client.describe()}` })
      await flowing(scenario, 300, `events after stall ${stall}`)
    }
    await finish(t, scenario, { disconnects: STALLS, code: 4008 })
    t.same(client.disconnects.filter((close) => !/^slow consumer; resume after \S+$/.test(close.reason)), [], 'every 4008 says where to resume')
  })
}
