import t from 'tap'
import { faultTest, flowing, handOvers, OVERLAPPING_CLIENTS } from './helpers/history-scenario.js'

// Fault (c) of docs/protocol.md section 6: the client's instance crashes
// (SIGKILL: no close frame, nothing flushed, its queue left behind) while
// events flow, twice; the client's reconnects fail until the proxy sends
// them to the next instance, where the client resumes.

await faultTest(t, 'the instance killed under the client (SIGKILL), twice: it resumes on the next instance and its handlers see every event exactly once, in order', {
  instances: 3,
  clients: OVERLAPPING_CLIENTS,
  disconnects: 2,
  code: 1006,
  fault: async (t, scenario) => {
    for (const [killed, next] of handOvers(scenario)) {
      killed.child.signal('SIGKILL')
      t.equal(await killed.child.exited('the killed instance to be gone', 5000), null, 'the instance was killed')
      // Only now, as a balancer that noticed: the client's first reconnects find nobody.
      scenario.proxy.setUpstream(next.port)
      await flowing(scenario, 300, 'events after the instance was killed')
    }
  }
})
