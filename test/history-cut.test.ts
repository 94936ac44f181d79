import t from 'tap'
import { faultTest, flowing, OVERLAPPING_CLIENTS } from './helpers/history-scenario.js'

// Fault (a) of docs/protocol.md section 6: the client's TCP connection is cut
// in the middle of a stream of events, several times; each time the client
// reconnects to the same instance and resumes where its handlers stopped.

const CUTS = 4

await faultTest(t, 'a connection cut mid-stream, four times: the client resumes and its handlers see every event exactly once, in order', {
  instances: 1,
  clients: OVERLAPPING_CLIENTS,
  disconnects: CUTS,
  code: 1006,
  fault: async (t, scenario) => {
    for (let cut = 1; cut <= CUTS; cut++) {
      t.ok(scenario.proxy.cutAll() >= 2, `cut ${cut}: both clients' connections cut`)
      // Events go on being published meanwhile; they must be there after the resume.
      await flowing(scenario, 200, `events after cut ${cut}`)
    }
  }
})
