import { randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import type { EventSocketOptions } from '../../lib/index.js'
import type { InstanceConfig } from '../fixtures/instance.js'
import { brokerOptions, brokerUrl, machineBroker, withAnyNode, withChannel, type BrokerSite } from './broker.js'
import { runScript, type ChildRun } from './wait.js'

// Instances of the app as child processes on one RabbitMQ exchange, for the
// tests that close or kill the instance under a client.

export interface Instance {
  port: number
  pid: number
  /** ws:// URL of the instance itself (the tests' clients go through the proxy instead). */
  url: string
  child: ChildRun
  /** The instance's `eventSocket.stats()`, over HTTP. */
  stats: () => Promise<Record<string, unknown>>
}

/**
 * Plugin options for the instances of one test: its own exchange and queue
 * prefix, named by one id, with every queue holding that id (the instances'
 * queues, those of instances killed before they could delete theirs, the
 * history stream) deleted when the test ends, with the exchange. On the
 * machine's broker unless `site` says otherwise (the cluster: `broker.url`
 * is then its node list).
 */
export function clusterOptions (t: Test, overrides: EventSocketOptions = {}, site: BrokerSite = machineBroker): EventSocketOptions {
  const id = randomUUID()
  const broker = brokerOptions(t, { url: site.url, exchange: `evsock.test.${id}`, queuePrefix: `evsock.test.${id}` })
  t.teardown(() => deleteQueuesNamed(id, site))
  return { history: true, handshakesPerMinute: 0, ...overrides, broker: { ...broker, ...overrides.broker } }
}

/** Deletes every queue (streams included) whose name contains `part`. */
export async function deleteQueuesNamed (part: string, site: BrokerSite = machineBroker): Promise<string[]> {
  const names = await queuesNamed(part, site)
  if (names.length > 0) {
    await withAnyNode(site.url, async (channel) => {
      for (const name of names) await channel.deleteQueue(name)
    })
  }
  return names
}

/** The names of the queues (streams included) whose name contains `part`. */
export async function queuesNamed (part: string, site: BrokerSite = machineBroker): Promise<string[]> {
  return (await site.ctl('list_queues', 'name')).split('\n').map((line) => line.trim()).filter((name) => name.includes(part))
}

/** Starts an instance in a child process (killed when the test ends) and waits until it listens. */
export async function startInstance (t: Test, options: EventSocketOptions): Promise<Instance> {
  const config: InstanceConfig = { options }
  const child = runScript(t, `
    import { runInstance } from './test/fixtures/instance.ts'
    await runInstance(${JSON.stringify(config)})
  `)
  const { port, pid } = await child.firstLine as { port: number, pid: number }
  const stats = async (): Promise<Record<string, unknown>> => await (await fetch(`http://127.0.0.1:${port}/stats`, { signal: AbortSignal.timeout(5000) })).json() as Record<string, unknown>
  return { port, pid, url: `ws://127.0.0.1:${port}/events`, child, stats }
}

/**
 * The data of the oldest event the history stream `stream` still holds: the
 * first delivery of a consumer at `first`; undefined when none comes within
 * `timeoutMs`. RabbitMQ 3.10 sends a new reader nothing at all when
 * retention has just dropped segments and nothing was published since.
 */
export async function oldestRetained (stream: string, timeoutMs = 2000): Promise<unknown> {
  return await withChannel(brokerUrl, async (channel) => {
    await channel.prefetch(1)
    return await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(undefined), timeoutMs)
      channel.consume(stream, (delivery) => {
        if (delivery === null) return
        clearTimeout(timer)
        resolve(JSON.parse(delivery.content.toString()))
      }, { arguments: { 'x-stream-offset': 'first' } }).catch(() => {})
    })
  })
}
