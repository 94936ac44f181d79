import { setPriority } from 'node:os'
import t from 'tap'
import { requireBroker } from '../helpers/broker.js'
import { deliveryReport } from '../helpers/delivery-check.js'
import { clusterOptions, startInstance } from '../helpers/instance.js'
import { stampClock, startPublishers } from '../helpers/publisher.js'
import { recordingClient, type RecordingClient } from '../helpers/resuming-client.js'
import { startServer } from '../helpers/server.js'
import { startSwarm } from '../helpers/swarm.js'
import { delay } from '../helpers/server.js'

// A deploy with history on (docs/protocol.md section 6): the instance under
// a thousand clients shuts down, and they all reconnect to the next one and
// resume at once, while events keep being published. Every one of them must
// end with every event exactly once; and the clients already on the next
// instance, which did not disconnect, must keep their live latency: the
// replays queue behind maxReplays, live delivery goes first.
// In test/serial, which tap runs alone: the latency it compares is the
// instance's, and another test file sharing the two cores would be measured too.

const CLIENTS = 1000
const CUSTOMERS = 20
const BASELINE_MS = 4000

interface Sample { at: number, ms: number }

function percentile (samples: Sample[], q: number): number {
  const sorted = samples.map((sample) => sample.ms).sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN
}

if (await requireBroker(t)) {
  t.test(`a deploy: ${CLIENTS} clients resume at once on the next instance, each gets every event exactly once, and the others' live delivery is not starved`, async (t) => {
    const options = clusterOptions(t)
    const [publishing, leaving, next] = await Promise.all([startServer(t, options), startInstance(t, options), startInstance(t, options)])
    const token = publishing.sign({ sub: 'deploy', role: 'admin' })
    // Each customer's events go to one client in CUSTOMERS, so that the thousand get a few events a second each.
    const topics = Array.from({ length: CUSTOMERS }, (_, c) => `orders.${c}.paid`)
    const swarm = await startSwarm(t, { upstreams: [leaving.port, next.port], token, count: CLIENTS, patterns: topics.map((_, c) => `*.${c}.paid`), publishers: 2 })
    t.pass(`${CLIENTS} clients subscribed through the swarm's proxy`)

    const samples: Sample[] = []
    const observers: RecordingClient[] = await Promise.all(Array.from({ length: 3 }, () => recordingClient(t, {
      url: next.url,
      token,
      patterns: ['orders.#'],
      onEvent: (_, stamp) => {
        const now = stampClock()
        samples.push({ at: now, ms: now - stamp.at })
      }
    })))
    // About 50 events a second: each replay reads every event since its client's position, matching or not.
    const publishers = startPublishers(t, publishing.app, { batch: 1, pauseMs: 40, topic: (n) => `orders.${n % CUSTOMERS}.paid`, sentinels: topics })

    await delay(1000)
    const baselineFrom = stampClock()
    // Latency is measured over time, not awaited: this is the measurement's duration, not a wait for an outcome.
    await delay(BASELINE_MS)
    const baseline = samples.filter((sample) => sample.at >= baselineFrom)

    const deployFrom = stampClock()
    await swarm.nextUpstream()
    // The old instance's shutdown, like the clients, would run on other
    // cores than the next instance's in a real deploy: here it yields to it.
    setPriority(leaving.pid, 10)
    leaving.child.signal('SIGTERM')
    await swarm.until((progress) => progress.resumed === CLIENTS, `all ${CLIENTS} clients to resume`, 45_000).catch(async (error: Error) => {
      throw new Error(`${error.message}; the next instance's stats: ${JSON.stringify(await next.stats().catch(String))}`)
    })
    const deployTook = Math.round(stampClock() - deployFrom)
    const during = samples.filter((sample) => sample.at >= deployFrom)
    t.equal(await leaving.child.exited('the old instance to exit', 10_000), 0, 'the old instance closed and exited')

    await publishers.stop()
    t.same(publishers.failures, [], `no publish failed (${publishers.count()} published)`)
    const report = await swarm.report(30_000)
    t.equal(report.length, CLIENTS)
    const failed = report.map((client, i) => ({ i, problem: deliveryReport(client.pattern, publishers.published, client.got.map(([p, n, topic]) => ({ p, n, topic }))) }))
      .filter(({ problem }) => problem !== '')
    t.same(failed.slice(0, 3), [], `every client got every matching event exactly once, in order (${failed.length} did not)`)
    t.same(report.filter((client) => client.closes.length !== 1 || client.closes[0] !== 1001).map((client) => client.closes).slice(0, 3), [], 'each client was closed once, with 1001')
    t.equal(report.filter((client) => client.resumes.length !== 1 || client.resumes[0] !== true).length, 0, 'each client resumed once, recovered')
    t.same(report.flatMap((client) => client.errors).slice(0, 3), [], 'no client had an error')

    for (const [i, observer] of observers.entries()) {
      await observer.sentinels(2)
      t.equal(observer.report(publishers.published), '', `observer ${i}: every event exactly once, in order`)
      t.same(observer.disconnects, [], `observer ${i}: never disconnected`)
    }
    const [p50, p95, dp50, dp95] = [percentile(baseline, 0.5), percentile(baseline, 0.95), percentile(during, 0.5), percentile(during, 0.95)]
    const ms = (value: number): string => `${value.toFixed(1)} ms`
    t.comment(`live latency: baseline p50 ${ms(p50)} p95 ${ms(p95)} (${baseline.length} samples); during the ${deployTook} ms resume of ${CLIENTS} clients p50 ${ms(dp50)} p95 ${ms(dp95)} (${during.length} samples)`)
    // The bound is 2x the median (issue 11). The thousand clients run at the
    // lowest CPU priority and the old instance's shutdown below the next's
    // (test/fixtures/client-swarm.ts): they stand for other machines, and at
    // equal priority their own work on these two cores was most of what was
    // measured (1.75x to 2.29x). During the resume the next instance is about
    // half busy, half of it with the thousand handshakes, a twentieth with
    // the replays; 16 runs alone measured 0.93x to 1.69x (11x before replays
    // read recent events from memory).
    t.comment(`live latency during the deploy: ${(dp50 / p50).toFixed(2)}x the baseline`)
    t.ok(dp50 <= 2 * p50, `the live latency of the clients that stayed (median ${ms(dp50)}) within 2x its value without the deploy (${ms(p50)}): replays do not starve live delivery`)
    t.ok(during.length > 0 && baseline.length > 0, 'latency was sampled before and during the deploy')
  })
}
