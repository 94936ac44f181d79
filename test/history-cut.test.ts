import t from 'tap'
import { requireBroker } from './helpers/broker.js'
import { finish, flowing, startScenario } from './helpers/history-scenario.js'

// Fault (a) of docs/protocol.md section 6: the client's TCP connection is cut
// in the middle of a stream of events, several times; each time the client
// reconnects to the same instance and resumes where its handlers stopped.

const CUTS = 4

if (await requireBroker(t)) {
  t.test('a connection cut mid-stream, four times: the client resumes and its handlers see every event exactly once, in order', async (t) => {
    const scenario = await startScenario(t, {
      instances: 1,
      clients: [
        { patterns: ['orders.#', '*.*.paid'], format: 'json' },
        { patterns: ['orders.*.created', 'stock.*', '*.*.paid'], format: 'msgpack' }
      ]
    })
    await flowing(scenario)
    for (let cut = 1; cut <= CUTS; cut++) {
      t.ok(scenario.proxy.cutAll() >= 2, `cut ${cut}: both clients' connections cut`)
      // Events go on being published meanwhile; they must be there after the resume.
      await flowing(scenario, 200, `events after cut ${cut}`)
    }
    await finish(t, scenario, { disconnects: CUTS, code: 1006 })
  })
}
