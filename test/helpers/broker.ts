import { execFile, execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { connect as tcpConnect } from 'node:net'
import { promisify } from 'node:util'
import { connect, type Channel, type ChannelModel } from 'amqplib'
import Fastify, { type FastifyBaseLogger } from 'fastify'
import type { Test } from 'tap'
import { createAmqpBus } from '../../lib/bus/amqp.js'
import type { Bus, BusMessage } from '../../lib/bus/types.js'
import { brokerDefaults, type EventSocketOptions, type ResolvedBrokerOptions } from '../../lib/options.js'
import { viaManagement } from './management.js'

// Shared by the tests that need the real RabbitMQ (.ci/run starts it).

export const brokerUrl = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672'

const run = promisify(execFile)

/**
 * True when the broker answers. Otherwise the test fails under CI=true (a
 * broker test that silently does not run proves nothing) and skips, loudly,
 * elsewhere (the whole file is planned as skipped).
 */
export async function requireBroker (t: Test, url = brokerUrl): Promise<boolean> {
  const problem = await probe(url)
  if (problem === undefined) return true
  return unavailable(t, `RABBITMQ NOT REACHABLE at ${redact(url)} (${problem})`, 'skipping broker tests')
}

/** Fails `t` under CI=true, else plans it as skipped, saying `what` is missing either way; returns false. */
export function unavailable (t: Test, what: string, skipping: string): false {
  const message = `${what} — ${process.env.CI === 'true' ? 'failing (CI=true)' : skipping}`
  if (process.env.CI === 'true') t.fail(message)
  else {
    t.comment(message)
    t.plan(0, message)
  }
  return false
}

/** Undefined when `url` takes a TCP connection and an AMQP handshake (each bounded), else what went wrong. */
export async function probe (url: string): Promise<string | undefined> {
  const { hostname, port } = new URL(url)
  try {
    await new Promise<void>((resolve, reject) => {
      const socket = tcpConnect({ host: hostname, port: Number(port || 5672), timeout: 1000 })
      socket.once('connect', () => { socket.destroy(); resolve() })
      socket.once('timeout', () => { socket.destroy(); reject(new Error('TCP connect timed out')) })
      socket.once('error', reject)
    })
    const connection = await connect(url, { timeout: 2000 })
    await connection.close()
    return undefined
  } catch (error) {
    return (error as Error).message
  }
}

/** Bus options for one test: its own exchange (deleted at the end), fast reconnects. */
export function brokerOptions (t: Test, overrides: Partial<ResolvedBrokerOptions> = {}): ResolvedBrokerOptions {
  const options: ResolvedBrokerOptions = {
    ...brokerDefaults,
    url: brokerUrl,
    exchange: `evsock.test.${randomUUID()}`,
    queuePrefix: 'evsock.test',
    reconnectInitialDelayMs: 50,
    reconnectMaxDelayMs: 500,
    ...overrides
  }
  // A list of nodes may start with a dead one, or a fault test may just have stopped one: the first that answers
  // deletes it; the machine's broker, last, when none does (a list of dead nodes never made the exchange).
  const nodes = typeof options.url === 'string' ? [options.url] : [...(options.url ?? []), brokerUrl]
  t.teardown(() => withAnyNode(nodes, (channel) => channel.deleteExchange(options.exchange)))
  return options
}

/** Bus options pointing at a closed port: nothing ever answers. */
export function unreachableOptions (overrides: Partial<ResolvedBrokerOptions> = {}): ResolvedBrokerOptions {
  return { ...brokerDefaults, url: 'amqp://guest:guest@127.0.0.1:1', reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200, ...overrides }
}

/** Runs `use` on a short-lived channel of its own connection. */
export async function withChannel<T> (url: string, use: (channel: Channel) => Promise<T>): Promise<T> {
  return await useChannel(await connect(url), use)
}

async function useChannel<T> (connection: ChannelModel, use: (channel: Channel) => Promise<T>): Promise<T> {
  try {
    const channel = await connection.createChannel()
    // A refused operation rejects its promise and also emits 'error'; the promise is what callers assert on.
    channel.on('error', () => {})
    return await use(channel)
  } finally {
    await connection.close()
  }
}

/**
 * `withChannel` on the first of `url`'s nodes that takes a connection (a
 * cluster's objects are everyone's: any live node will do); rejects, naming
 * every node, when none does.
 */
export async function withAnyNode<T> (url: string | readonly string[], use: (channel: Channel) => Promise<T>): Promise<T> {
  const errors: string[] = []
  for (const node of typeof url === 'string' ? [url] : url) {
    let connection: ChannelModel
    try {
      connection = await connect(node, { timeout: 5000 })
    } catch (error) {
      errors.push(`${redact(node)}: ${(error as Error).message}`)
      continue
    }
    return await useChannel(connection, use)
  }
  throw new Error(`no node took a connection: ${errors.join('; ')}`)
}

/**
 * Where a test's queues and bindings live, for the helpers that list or clean
 * them up: the machine's broker (5672) unless a test says otherwise (the
 * cluster, test/helpers/cluster.ts).
 */
export interface BrokerSite {
  /** What the instances get as `broker.url`, and where clean-ups connect (the first node that answers). */
  url: string | readonly string[]
  /** `rabbitmqctl -q` against that broker. */
  ctl: (...args: string[]) => Promise<string>
}

export interface LogEntry { level: number, msg: string, [key: string]: unknown }

/** A real pino logger (through Fastify) whose lines are kept for assertions. */
export function recordingLogger (): { log: FastifyBaseLogger, entries: LogEntry[] } {
  const entries: LogEntry[] = []
  const stream = { write: (line: string) => { entries.push(JSON.parse(line)) } }
  return { log: Fastify({ logger: { level: 'debug', stream } }).log, entries }
}

export interface StartedBus { bus: Bus, received: BusMessage[], entries: LogEntry[] }

/** A started amqp bus that records what it receives and logs; closed when the test ends. */
export async function startBus (t: Test, options: ResolvedBrokerOptions): Promise<StartedBus> {
  const { log, entries } = recordingLogger()
  const bus = createAmqpBus(options, log)
  const received: BusMessage[] = []
  t.teardown(() => bus.close())
  await bus.start((delivered) => { received.push(delivered) })
  return { bus, received, entries }
}

export function busMessage (topic: string, data: unknown = { topic }): BusMessage {
  return { id: randomUUID(), topic, time: Date.now(), payload: Buffer.from(JSON.stringify(data)) }
}

/** `rabbitmqctl -q ...args` on the machine's broker: through its management API when that answers the command (test/helpers/management.ts), else the CLI. */
export async function rabbitmqctl (...args: string[]): Promise<string> {
  const answered = await viaManagement(args)
  if (answered !== undefined) return answered
  const { stdout } = await run('rabbitmqctl', ['-q', ...args], { timeout: 30_000 })
  return stdout
}

/** The machine's broker, which most tests run on. */
export const machineBroker: BrokerSite = { url: brokerUrl, ctl: rabbitmqctl }

/** The in-process bus and RabbitMQ, for tests that must hold on both. */
export interface BusCase {
  name: string
  options: (t: Test) => EventSocketOptions
  available: (t: Test) => Promise<boolean>
}

export const busCases: BusCase[] = [
  { name: 'memory', options: () => ({}), available: async () => true },
  { name: 'amqp', options: (t) => ({ broker: brokerOptions(t) }), available: (t) => requireBroker(t) }
]

export interface Binding { queue: string, key: string }

/** The broker's bindings whose source is `exchange` (through rabbitmqctl, 1-2 s of CPU, where the management API is off: call it sparingly). */
export async function bindingsOf (exchange: string, site: BrokerSite = machineBroker): Promise<Binding[]> {
  const out = await site.ctl('list_bindings', 'source_name', 'destination_name', 'routing_key')
  const found: Binding[] = []
  for (const line of out.split('\n')) {
    const [source, queue, key] = line.split('\t')
    // `$evsock.` keys are the plugin's own control bindings, there for the instance's whole life.
    if (source === exchange && queue !== undefined && key !== undefined && !key.startsWith('$evsock.')) found.push({ queue, key })
  }
  return found
}

/**
 * A fresh vhost for a test that drops connections, so that
 * `close_all_connections` hits this test's connections and nobody else's.
 * Returns its URL; the vhost is deleted when the test ends.
 */
export async function privateVhost (t: Test): Promise<string> {
  const vhost = `evsock-test-${randomUUID()}`
  await rabbitmqctl('add_vhost', vhost)
  t.teardown(() => rabbitmqctl('delete_vhost', vhost))
  const url = new URL(brokerUrl)
  await rabbitmqctl('set_permissions', '-p', vhost, decodeURIComponent(url.username), '.*', '.*', '.*')
  url.pathname = `/${encodeURIComponent(vhost)}`
  return url.toString()
}

export function redact (url: string): string {
  const parsed = new URL(url)
  if (parsed.password !== '') parsed.password = '***'
  return parsed.toString()
}

/**
 * Sets off a real memory alarm: the broker blocks every connection that
 * publishes, everywhere on it. Returns the function that clears it; the test's
 * teardown clears it too, and so does the process's exit, so that a failing
 * or killed test cannot leave the broker blocked for everyone.
 */
export async function memoryAlarm (t: Test): Promise<() => Promise<void>> {
  const original = (await rabbitmqctl('eval', 'vm_memory_monitor:get_vm_memory_high_watermark().')).trim()
  // `0.4` (a fraction) or `{absolute,1073741824}`.
  const absolute = /^\{absolute,(\d+)\}$/.exec(original)
  const restoreArgs = absolute === null ? ['set_vm_memory_high_watermark', original] : ['set_vm_memory_high_watermark', 'absolute', absolute[1] as string]
  let restored = false
  const restoreNow = (): void => {
    if (!restored) execFileSync('rabbitmqctl', ['-q', ...restoreArgs], { timeout: 30_000 })
  }
  process.once('exit', restoreNow)
  const restore = async (): Promise<void> => {
    if (restored) return
    await rabbitmqctl(...restoreArgs)
    restored = true
    process.removeListener('exit', restoreNow)
  }
  t.teardown(restore)
  await rabbitmqctl('set_vm_memory_high_watermark', '0.0000001')
  return restore
}
