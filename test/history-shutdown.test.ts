import t from 'tap'
import { faultTest, flowing, handOvers } from './helpers/history-scenario.js'

// Fault (b) of docs/protocol.md section 6: the client's instance shuts down
// (SIGTERM, app.close(), close 1001) while events flow, twice, as in a
// rolling deploy; the proxy sends the reconnect to the next instance, where
// the client resumes.

await faultTest(t, 'the instance closed under the client (1001), twice: it resumes on the next instance and its handlers see every event exactly once, in order', {
  instances: 3,
  clients: [
    { patterns: ['orders.#', 'stock.*'], format: 'msgpack' },
    { patterns: ['*.*.paid', 'orders.*.created'], format: 'json' }
  ],
  disconnects: 2,
  code: 1001,
  fault: async (t, scenario) => {
    for (const [closing, next] of handOvers(scenario)) {
      scenario.proxy.setUpstream(next.port)
      closing.child.signal('SIGTERM')
      t.equal(await closing.child.exited('the closed instance to exit', 10_000), 0, 'the instance closed cleanly and exited')
      await flowing(scenario, 300, 'events after the instance closed')
    }
  }
})
