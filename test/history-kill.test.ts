import t from 'tap'
import { requireBroker } from './helpers/broker.js'
import { finish, flowing, startScenario } from './helpers/history-scenario.js'
import type { Instance } from './helpers/instance.js'

// Fault (c) of docs/protocol.md section 6: the client's instance crashes
// (SIGKILL: no close frame, nothing flushed, its queue left behind) while
// events flow, twice; the client's reconnects fail until the proxy sends
// them to the next instance, where the client resumes.

if (await requireBroker(t)) {
  t.test('the instance killed under the client (SIGKILL), twice: it resumes on the next instance and its handlers see every event exactly once, in order', async (t) => {
    const scenario = await startScenario(t, {
      instances: 3,
      clients: [
        { patterns: ['orders.#', '*.*.paid'], format: 'json' },
        { patterns: ['orders.*.created', 'stock.*', '*.*.paid'], format: 'msgpack' }
      ]
    })
    const [first, second, third] = scenario.instances as [Instance, Instance, Instance]
    await flowing(scenario)
    for (const [killed, next] of [[first, second], [second, third]] as const) {
      killed.child.signal('SIGKILL')
      t.equal(await killed.child.exited('the killed instance to be gone', 5000), null, 'the instance was killed')
      // Only now, as a balancer that noticed: the client's first reconnects find nobody.
      scenario.proxy.setUpstream(next.port)
      await flowing(scenario, 300, 'events after the instance was killed')
    }
    await finish(t, scenario, { disconnects: 2, code: 1006 })
  })
}
