import type { Test } from 'tap'
import type { EventSocketOptions } from '../../lib/index.js'
import { requireBroker } from './broker.js'
import { clusterOptions, startInstance, type Instance } from './instance.js'
import { startPublishers, type PublisherOptions, type Publishers } from './publisher.js'
import { recordingClient, type RecordingClient, type RecordingClientOptions } from './resuming-client.js'
import { startServer, type TestServer } from './server.js'
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js'
import { waitFor } from './wait.js'

// The stage of the fault tests of history and resume: instances in child
// processes on one exchange with history on, a proxy in front of the first,
// a publishing instance in the test's process, and the bundled clients
// through the proxy. The test breaks something, then `finish` checks that
// every client got every matching event exactly once, in order.

export interface Scenario {
  options: EventSocketOptions
  instances: Instance[]
  proxy: TcpProxy
  publishing: TestServer
  publishers: Publishers
  clients: RecordingClient[]
}

export interface ScenarioOptions {
  /** Plugin options of every instance (history is on unless they say otherwise). */
  options?: EventSocketOptions
  /** Instances in child processes; the proxy points at the first. Default 2. */
  instances?: number
  clients: Array<Omit<RecordingClientOptions, 'url' | 'token'>>
  publishers?: PublisherOptions
}

export async function startScenario (t: Test, scenario: ScenarioOptions): Promise<Scenario> {
  const options = clusterOptions(t, scenario.options)
  const [publishing, ...instances] = await Promise.all([
    startServer(t, options),
    ...Array.from({ length: scenario.instances ?? 2 }, () => startInstance(t, options))
  ]) as [TestServer, ...Instance[]]
  const proxy = await startTcpProxy(t, (instances[0] as Instance).port)
  const token = publishing.sign({ sub: 'reader', role: 'admin' })
  const clients = await Promise.all(scenario.clients.map((client) => recordingClient(t, { ...client, url: proxy.url, token })))
  const publishers = startPublishers(t, publishing.app, scenario.publishers)
  return { options, instances, proxy, publishing, publishers, clients }
}

/** Resolves once every client's handlers got `count` more events than now: the stream flows (again). */
export async function flowing (scenario: Pick<Scenario, 'clients'>, count = 100, what = 'events to flow'): Promise<void> {
  const total = (client: RecordingClient): number => [...client.got.values()].reduce((sum, record) => sum + record.length, 0)
  const from = scenario.clients.map(total)
  await waitFor(() => scenario.clients.every((client, i) => total(client) >= (from[i] as number) + count), {
    what: `${count} more ${what} at every client`,
    timeoutMs: 15_000,
    detail: () => scenario.clients.map((client, i) => `client ${i}: ${total(client) - (from[i] as number)} more; ${client.describe()}`).join('\n')
  })
}

/**
 * Stops the publishers, waits for their last events at every client, and
 * asserts: no publish failed, every client's handlers got every matching
 * event exactly once in order per publisher, each client went through
 * `disconnects` closes (with `code` when given), and every resume it
 * reported recovered.
 */
export async function finish (t: Test, scenario: Scenario, { disconnects, code }: { disconnects: number, code?: number }): Promise<void> {
  const { publishers, clients } = scenario
  await publishers.stop()
  t.same(publishers.failures, [], `no publish failed (${publishers.count()} published)`)
  const publisherCount = publishers.published.length
  for (const [i, client] of clients.entries()) {
    const name = `client ${i} (${client.patterns.join(' ')})`
    await client.sentinels(publisherCount)
    const report = client.report(publishers.published)
    t.ok(report === '', `${name}: every matching event exactly once, in order per publisher`, { report })
    t.equal(client.disconnects.length, disconnects, `${name}: went through ${disconnects} closes (${client.disconnects.map((close) => `${close.code} ${close.reason}`).join(', ')})`)
    if (code !== undefined) t.same(client.disconnects.filter((close) => close.code !== code), [], `${name}: every close was ${code}`)
    t.equal(client.resumes.length, disconnects * client.patterns.length, `${name}: resumed every pattern after every close`)
    t.same(client.resumes.filter((resume) => !resume.recovered), [], `${name}: every resume recovered`)
  }
}

/** Two clients whose patterns overlap (an event matching several reaches each handler once), one per format. */
export const OVERLAPPING_CLIENTS: ScenarioOptions['clients'] = [
  { patterns: ['orders.#', '*.*.paid'], format: 'json' },
  { patterns: ['orders.*.created', 'stock.*', '*.*.paid'], format: 'msgpack' }
]

export interface FaultTest extends ScenarioOptions {
  /** Breaks something under the clients, once events flow; returns once events flow again after the last break. */
  fault: (t: Test, scenario: Scenario) => Promise<void>
  /** What `finish` expects every client to have gone through. */
  disconnects: number
  code: number
}

/**
 * One fault test of history and resume on the broker: the scenario, events
 * flowing, the fault, then `finish`'s checks. Without a broker it fails under
 * CI=true and skips elsewhere, as requireBroker does.
 */
export async function faultTest (t: Test, name: string, { fault, disconnects, code, ...scenario }: FaultTest): Promise<void> {
  if (!await requireBroker(t)) return
  t.test(name, async (t) => {
    const running = await startScenario(t, scenario)
    await flowing(running)
    await fault(t, running)
    await finish(t, running, { disconnects, code })
  })
}

/** Each instance with the one after it, as a rolling deploy or a balancer moves clients along: [first, second], [second, third]… */
export function handOvers (scenario: Scenario): Array<[Instance, Instance]> {
  return scenario.instances.slice(1).map((next, i) => [scenario.instances[i] as Instance, next])
}
