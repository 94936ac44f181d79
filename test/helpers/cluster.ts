import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { Test } from 'tap'
import { probe, redact, unavailable, withAnyNode, withChannel, type BrokerSite } from './broker.js'

// The local three-node cluster of scripts/rabbitmq-cluster.sh (issue 12), for
// the tests that run on a cluster: its URLs, a guard that skips or fails like
// requireBroker, faults (stop and start a node), and where things live on it.

const run = promisify(execFile)

/** scripts/rabbitmq-cluster.sh, wherever the tests run from. */
export const clusterScript = fileURLToPath(new URL('../../scripts/rabbitmq-cluster.sh', import.meta.url))

/** The nodes' AMQP URLs, rc1 first: EVSOCK_CLUSTER_URLS (comma separated), else the script's three. */
export const clusterUrls: string[] = (process.env.EVSOCK_CLUSTER_URLS ?? 'amqp://guest:guest@127.0.0.1:5681,amqp://guest:guest@127.0.0.1:5682,amqp://guest:guest@127.0.0.1:5683')
  .split(',').map((url) => url.trim()).filter((url) => url !== '')

/** Node N's Erlang name (1-based), as RabbitMQ reports it: `rc2@localhost`. */
export const nodeName = (n: number): string => `rc${n}@localhost`

const nodeNumbers = [1, 2, 3]

/** How long one rabbitmqctl call may take (it starts an Erlang VM: ~0.5 s when all is well). */
const CTL_TIMEOUT_MS = 20_000
/** How long the script may take to stop or start a node (it waits for the node itself, within 60 s). */
const SCRIPT_TIMEOUT_MS = 80_000

/**
 * True when every node of the cluster takes an AMQP connection. Otherwise the
 * test fails under CI=true (.ci/run starts the cluster) and skips, loudly,
 * elsewhere.
 */
export async function requireCluster (t: Test, urls = clusterUrls): Promise<boolean> {
  const problems = await Promise.all(urls.map(async (url) => {
    const problem = await probe(url)
    return problem === undefined ? undefined : `${redact(url)} (${problem})`
  }))
  const down = problems.filter((problem) => problem !== undefined)
  if (down.length === 0) return true
  return unavailable(t, `RABBITMQ CLUSTER NOT REACHABLE: ${down.join(', ')}; start it with \`npm run cluster start\``, 'skipping cluster tests')
}

/** The script's `status`: exit code 0 and the three nodes when all run. */
export async function scriptStatus (): Promise<{ code: number, stdout: string }> {
  try {
    const { stdout } = await run('bash', [clusterScript, 'status'], { timeout: 30_000 })
    return { code: 0, stdout }
  } catch (error) {
    const { code, stdout } = error as { code: number, stdout: string }
    return { code, stdout }
  }
}

/** Declares a quorum queue or stream through node N (which then leads it), deleted, through any node up, when the test ends. */
export async function declareReplicated (t: Test, type: 'quorum' | 'stream', n: number): Promise<string> {
  const name = `evsock.test.cluster.${type}.${randomUUID()}`
  await withChannel(clusterUrls[n - 1] as string, (channel) => channel.assertQueue(name, {
    durable: true,
    arguments: { 'x-queue-type': type, 'x-queue-leader-locator': 'client-local' }
  }))
  t.teardown(() => withAnyNode(clusterUrls, (channel) => channel.deleteQueue(name)))
  return name
}

/** Stops node N (1-3) and waits until its runtime has exited. */
export async function stopNode (n: number): Promise<void> {
  await runScript('stop-node', n)
}

/** Starts node N (1-3) and waits until it is back among the cluster's running nodes. */
export async function startNode (n: number): Promise<void> {
  await runScript('start-node', n)
}

async function runScript (command: string, n: number): Promise<void> {
  if (!nodeNumbers.includes(n)) throw new Error(`no cluster node ${n} (the nodes are 1, 2 and 3)`)
  try {
    // The script's own bound comes first, so that its message (which node, where its logs are) is what fails.
    await run('bash', [clusterScript, command, String(n)], { timeout: SCRIPT_TIMEOUT_MS, env: { ...process.env, EVSOCK_CLUSTER_START_TIMEOUT: '60' } })
  } catch (error) {
    throw new Error(`rabbitmq-cluster.sh ${command} ${n} failed: ${failure(error)}`)
  }
}

/**
 * `rabbitmqctl` on the first of the cluster's nodes that answers, rc1 first:
 * the listings it is used for cover the whole cluster, and a fault test may
 * have stopped any one node.
 */
export async function clusterCtl (...args: string[]): Promise<string> {
  const errors: string[] = []
  for (const n of nodeNumbers) {
    try {
      const { stdout } = await run('rabbitmqctl', ['-q', '-n', nodeName(n), ...args], { timeout: CTL_TIMEOUT_MS })
      return stdout
    } catch (error) {
      errors.push(`${nodeName(n)}: ${failure(error)}`)
    }
  }
  throw new Error(`rabbitmqctl ${args.join(' ')} failed on every cluster node: ${errors.join('; ')}`)
}

/** The cluster as the place a test's queues and bindings live (test/helpers/broker.ts `BrokerSite`). */
export const clusterSite: BrokerSite = { url: clusterUrls, ctl: clusterCtl }

function failure (error: unknown): string {
  const { message, stderr, killed } = error as { message: string, stderr?: string, killed?: boolean }
  if (killed === true) return `timed out (${message.split('\n')[0] ?? ''})`
  const detail = stderr?.trim() ?? ''
  return detail === '' ? message : detail
}

/** The nodes running RabbitMQ in the cluster, sorted (`rc1@localhost`, ...). */
export async function runningNodes (): Promise<string[]> {
  const status = JSON.parse(await clusterCtl('cluster_status', '--formatter', 'json')) as { running_nodes?: string[] }
  if (!Array.isArray(status.running_nodes)) throw new Error('rabbitmqctl cluster_status gave no running_nodes')
  return [...status.running_nodes].sort()
}

export interface QueueInfo {
  name: string
  /** `quorum`, `stream` or `classic`. */
  type: string
  /** The node leading a quorum queue or stream. */
  leader: string
  /** The nodes holding a replica. */
  members: string[]
  /** The members that are up. */
  online: string[]
}

/** Where each of the queues (streams included) `names` of `vhost` lives, in one call; throws when the cluster lacks one. */
export async function queueInfos (names: readonly string[], vhost = '/'): Promise<QueueInfo[]> {
  const queues = JSON.parse(await clusterCtl('list_queues', '-p', vhost, 'name', 'type', 'leader', 'members', 'online', '--formatter', 'json')) as QueueInfo[]
  return names.map((name) => {
    const queue = queues.find((candidate) => candidate.name === name)
    if (queue === undefined) throw new Error(`no queue ${name} in vhost ${vhost} on the cluster`)
    return queue
  })
}

/** Where the queue (or stream) `name` of `vhost` lives; throws when the cluster has no such queue. */
export async function queueInfo (name: string, vhost = '/'): Promise<QueueInfo> {
  return (await queueInfos([name], vhost))[0] as QueueInfo
}

/** The node leading the quorum queue or stream `name`; throws for a classic queue (it has none). */
export async function queueLeader (name: string, vhost = '/'): Promise<string> {
  const { type, leader } = await queueInfo(name, vhost)
  if (typeof leader !== 'string' || leader === '') throw new Error(`queue ${name} has no leader (type ${type}: only quorum queues and streams have one)`)
  return leader
}

export interface NamedConnection {
  /** Its `connection_name` client property. */
  name: string
  /** The node it is on. */
  node: string
  /** Its Erlang pid, as rabbitmqctl prints it (what `closeConnection` takes). */
  pid: string
}

/**
 * The cluster's client connections whose `connection_name` client property
 * satisfies `wanted` (the plugin's are `fastify-event-socket publisher
 * <queue>` and `... consumer <queue>`), with the node each is on.
 */
export async function namedConnections (wanted: (name: string) => boolean): Promise<NamedConnection[]> {
  // The table format, not JSON: JSON prints a connection's pid without its node.
  const out = await clusterCtl('list_connections', '--no-table-headers', 'pid', 'client_properties')
  const found: NamedConnection[] = []
  for (const line of out.split('\n')) {
    const [pid, properties] = line.split('\t')
    if (pid === undefined || properties === undefined) continue
    // `{"connection_name","fastify-event-socket consumer evsock.x"}`, with Erlang's escapes.
    const name = /\{"connection_name","((?:[^"\\]|\\.)*)"\}/.exec(properties)?.[1]?.replace(/\\(.)/g, '$1')
    if (name === undefined || !wanted(name)) continue
    // `<rc2@localhost.1796022297.1617.0>`: the node, then three numbers (a host name may hold dots too).
    const node = /^<(.+@.+?)\.\d+\.\d+\.\d+>$/.exec(pid)?.[1]
    if (node === undefined) throw new Error(`cannot read the node of connection pid ${pid}`)
    found.push({ name, node, pid })
  }
  return found
}

/**
 * The node holding the client connection named `connectionName`, or
 * undefined when there is none. Throws when connections of that name are on
 * several nodes.
 */
export async function nodeOfConnection (connectionName: string): Promise<string | undefined> {
  const nodes = new Set((await namedConnections((name) => name === connectionName)).map((connection) => connection.node))
  if (nodes.size > 1) throw new Error(`connections named ${connectionName} are on several nodes: ${[...nodes].join(', ')}`)
  return [...nodes][0]
}

/** Closes a client connection from the broker's side, as an operator would (`rabbitmqctl close_connection`). */
export async function closeConnection (pid: string, reason: string): Promise<void> {
  await clusterCtl('close_connection', pid, reason)
}
