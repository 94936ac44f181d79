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
/**
 * Events that may wait behind the window before the cut. A stalled handler
 * fills any bound within its STALL_MS; a healthy client must never reach it,
 * though it shares the test's process (and the cores) with the publishers and
 * the proxy: at 4 windows (64 events, about 0.3 s of publishing) a pause of
 * that process under the full suite once cut the client a third time.
 */
const MAX_PENDING = 16 * WINDOW

/** Events the client's orders.# handler may trail each publisher by and still count as caught up. */
const LAG = WINDOW
/** A stall that brings no close within this long was during a replay (see below), and is tried again. */
const STALL_MS = 5000

if (await requireBroker(t)) {
  t.test('a stalled handler gets the client closed with 4008, twice: it resumes, catches up, and its handlers see every event exactly once, in order', async (t) => {
    // The stall lasts until the close it provokes, or STALL_MS. Only a live
    // client is cut: a replay waits for the client's acks instead of queueing
    // (docs/protocol.md section 6), so a stall armed while the client still
    // replays what it missed after the first cut brings no close. The test
    // arms each stall once the client has caught up, and arms it again if the
    // stall landed on a replayed event all the same.
    let armed = false
    let release: (() => void) | undefined
    let stallsEnded = 0
    const scenario = await startScenario(t, {
      instances: 1,
      options: { window: WINDOW, maxPendingEvents: MAX_PENDING },
      clients: [{
        patterns: ['orders.#', '*.*.paid'],
        format: 'json',
        onEvent: (pattern) => {
          if (pattern !== 'orders.#' || !armed) return
          armed = false
          return new Promise<void>((resolve) => {
            const end = (): void => { stallsEnded++; resolve() }
            const timer = setTimeout(end, STALL_MS)
            release = () => { clearTimeout(timer); end() }
          })
        }
      }]
    })
    const client = scenario.clients[0] as RecordingClient
    client.client.on('disconnect', () => { release?.() })
    const caughtUp = (): boolean => {
      const got = client.got.get('orders.#') ?? []
      return scenario.publishers.published.every((record, p) => {
        for (let i = got.length - 1; i >= 0; i--) if (got[i]?.p === p) return (got[i]?.n as number) >= record.length - LAG
        return false
      })
    }
    for (let stall = 1; stall <= STALLS; stall++) {
      let stalls = 0
      while (client.disconnects.length < stall && stalls < 3) {
        stalls++
        await waitFor(caughtUp, { what: `the client to catch up before stall ${stall}`, timeoutMs: 20_000, detail: () => client.describe() })
        const ended = stallsEnded
        armed = true
        await waitFor(() => client.disconnects.length >= stall || stallsEnded > ended, { what: `the close after stall ${stall}, or the stall's end`, timeoutMs: STALL_MS + 10_000, detail: () => client.describe() })
      }
      t.ok(client.disconnects.length >= stall, `stall ${stall} brought a close with 4008 (after ${stalls} stall${stalls === 1 ? '' : 's'} of the handler)`)
      await flowing(scenario, 300, `events after stall ${stall}`)
    }
    await finish(t, scenario, { disconnects: STALLS, code: 4008 })
    t.same(client.disconnects.filter((close) => !/^slow consumer; resume after \S+$/.test(close.reason)), [], 'every 4008 says where to resume')
  })
}
