import t from 'tap'
import { requireBroker } from './helpers/broker.js'
import { finish, flowing, startScenario } from './helpers/history-scenario.js'
import type { Instance } from './helpers/instance.js'

// Fault (b) of docs/protocol.md section 6: the client's instance shuts down
// (SIGTERM, app.close(), close 1001) while events flow, twice, as in a
// rolling deploy; the proxy sends the reconnect to the next instance, where
// the client resumes.

if (await requireBroker(t)) {
  t.test('the instance closed under the client (1001), twice: it resumes on the next instance and its handlers see every event exactly once, in order', async (t) => {
    const scenario = await startScenario(t, {
      instances: 3,
      clients: [
        { patterns: ['orders.#', 'stock.*'], format: 'msgpack' },
        { patterns: ['*.*.paid', 'orders.*.created'], format: 'json' }
      ]
    })
    const [first, second, third] = scenario.instances as [Instance, Instance, Instance]
    await flowing(scenario)
    for (const [closing, next] of [[first, second], [second, third]] as const) {
      scenario.proxy.setUpstream(next.port)
      closing.child.signal('SIGTERM')
      t.equal(await closing.child.exited('the closed instance to exit', 10_000), 0, 'the instance closed cleanly and exited')
      await flowing(scenario, 300, 'events after the instance closed')
    }
    await finish(t, scenario, { disconnects: 2, code: 1001 })
  })
}
