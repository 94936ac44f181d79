import t, { type Test } from 'tap'
import { brokerKey } from '../lib/bus/amqp-bindings.js'
import type { BrokerOptions } from '../lib/options.js'
import { bindingsOf, probe } from './helpers/broker.js'
import {
  closeConnection, clusterSite, clusterUrls, namedConnections, nodeName, queueInfos, queueLeader, requireCluster, runningNodes, scriptStatus, startNode, stopNode,
  type QueueInfo
} from './helpers/cluster.js'
import type { Got } from './helpers/delivery-check.js'
import { flowing } from './helpers/history-scenario.js'
import { clusterOptions, queuesNamed } from './helpers/instance.js'
import { stampClock, startPublishers, type Published, type Publishers, type Stamp } from './helpers/publisher.js'
import { recordingClient, type RecordingClient } from './helpers/resuming-client.js'
import { startServer, type TestServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'

// Fault tests on the three-node cluster of scripts/rabbitmq-cluster.sh
// (issue 12; docs/rabbitmq.md, "Running on a cluster"): two instances on
// broker.url = the cluster's nodes, quorum instance queues, each publishing
// and each with bundled clients subscribed to wildcard patterns. One node
// stops and starts again under them: the one holding an instance's
// connections, the one leading its queue (or the history stream), one that
// holds none of their connections; with history off and on. After each:
// every publish that resolved reached every client whose patterns match it
// (with history on exactly once and in order; off, no duplicate), every
// publish that failed failed with FST_EVSOCK_BROKER_UNAVAILABLE, and the
// instance queues are bound to what their sockets want and nothing else,
// nothing at all once the instances close. Each stop also checks the script
// (stop-node takes the node out, start-node brings it back).
//
// The only test file that stops nodes: tap runs files in parallel, and a
// second file stopping another node would take the cluster's majority away.

// Six node stops and starts of ~11 s each, with the failovers and checks between (rabbitmqctl takes ~1.5 s a call).
t.setTimeout(240_000)

const allNodes = [nodeName(1), nodeName(2), nodeName(3)]
const numberOf = (node: string): number => allNodes.indexOf(node) + 1
const UNAVAILABLE = 'FST_EVSOCK_BROKER_UNAVAILABLE'

/** The clients of each instance: wildcards of every kind, overlapping; each matches the publishers' last event (orders.end.paid). */
const CLIENTS = {
  A: [
    { patterns: ['orders.#', '*.*.paid'], format: 'json' },
    // Bound under orders.#, which routes more than it: the instance filters.
    { patterns: ['orders.#.paid', 'stock.*'], format: 'msgpack' }
  ],
  B: [
    { patterns: ['orders.*.created', 'stock.*', '*.*.paid'], format: 'msgpack' },
    // Bound under #: the instance queue gets everything.
    { patterns: ['*.3.*', '#.paid'], format: 'json' }
  ]
} as const

type Label = keyof typeof CLIENTS

/** When one client's handlers got events, on stampClock(), since the case began; and when the first one published after a moment came. */
class Arrivals {
  firstAfter: number | undefined
  #times: number[] = []
  #after = Infinity

  /** Starts a case: nothing seen, nothing awaited. */
  reset (): void {
    this.#times = []
    this.firstAfter = undefined
    this.#after = Infinity
  }

  /** From now on, `firstAfter` is when the first event published at `after` or later arrived. */
  await (after: number): void {
    this.#after = after
    this.firstAfter = undefined
  }

  see (stamp: Stamp): void {
    const now = stampClock()
    this.#times.push(now)
    if (this.firstAfter === undefined && stamp.at >= this.#after) this.firstAfter = now
  }

  /** The longest pause between two deliveries ending between `from` and `to` (the one `from` falls in counts whole). */
  longestPause (from: number, to: number): number {
    let longest = 0
    let previous: number | undefined
    for (const time of this.#times) {
      if (time > to) break
      if (previous !== undefined && time >= from) longest = Math.max(longest, time - previous)
      previous = time
    }
    return longest
  }
}

interface Watched {
  client: RecordingClient
  arrivals: Arrivals
}

interface Member {
  label: Label
  server: TestServer
  /** Its queuePrefix: names its connections (and, history off, its queue). */
  prefix: string
  clients: Watched[]
}

interface LogLine {
  at: number
  member: Label
  level: number
  msg: string
  connection?: string
  node?: string
  lastError?: string
}

interface Stage {
  history: boolean
  exchange: string
  stream: string
  members: Member[]
  clients: RecordingClient[]
  /** Every publish that resolved so far, by publisher number (each case adds one publisher per instance). */
  published: Published[][]
  /** Publishes that rejected so far: their events may have been routed all the same. */
  maybe: Got[]
  logs: LogLine[]
}

/** Two instances on the cluster's nodes, quorum instance queues, with their clients subscribed. */
async function startStage (t: Test, history: boolean): Promise<Stage> {
  const options = clusterOptions(t, { history, broker: { queueType: 'quorum' } }, clusterSite)
  const broker = options.broker as BrokerOptions & { exchange: string, queuePrefix: string }
  const logs: LogLine[] = []
  const members = await Promise.all((['A', 'B'] as const).map(async (label): Promise<Member> => {
    const prefix = `${broker.queuePrefix}.${label}`
    // The bus logs every connection lost and up again, with its node: the evidence when a case fails.
    const stream = {
      write: (line: string) => {
        const { level, msg, connection, node, lastError } = JSON.parse(line) as Omit<LogLine, 'at' | 'member'>
        logs.push({ at: stampClock(), member: label, level, msg, connection, node, lastError })
      }
    }
    const server = await startServer(t, { ...options, broker: { ...broker, queuePrefix: prefix } }, undefined, { level: 'info', stream })
    const token = server.sign({ sub: 'reader', role: 'admin' })
    const clients = await Promise.all(CLIENTS[label].map(async ({ patterns, format }) => {
      const arrivals = new Arrivals()
      const client = await recordingClient(t, { url: server.url, token, patterns: [...patterns], format, onEvent: (_pattern, stamp) => { arrivals.see(stamp) } })
      return { client, arrivals }
    }))
    return { label, server, prefix, clients }
  }))
  return {
    history,
    exchange: broker.exchange,
    stream: `${broker.exchange}.history`,
    members,
    clients: members.flatMap((member) => member.clients.map(({ client }) => client)),
    published: [],
    maybe: [],
    logs
  }
}

/** Where one instance's two connections are, and its queue's name (history off). */
interface Placement {
  publisher: string | undefined
  consumer: string | undefined
  queue: string | undefined
}

const CONNECTION = 'fastify-event-socket '

async function placements (stage: Stage): Promise<Placement[]> {
  const connections = await namedConnections((name) => name.startsWith(CONNECTION))
  return stage.members.map((member) => {
    const mine = connections.filter((connection) => connection.name.includes(` ${member.prefix}.`))
    const of = (role: string): { name: string, node: string } | undefined => {
      const found = mine.filter((connection) => connection.name.startsWith(`${CONNECTION}${role} `))
      if (found.length > 1) throw new Error(`instance ${member.label} has ${found.length} ${role} connections: ${found.map((each) => each.node).join(', ')}`)
      return found[0]
    }
    const consumer = of('consumer')
    return { publisher: of('publisher')?.node, consumer: consumer?.node, queue: consumer?.name.slice(`${CONNECTION}consumer `.length) }
  })
}

const describe = (stage: Stage, where: Placement[]): string =>
  where.map((place, i) => `${stage.members[i]?.label}: publisher on ${place.publisher}, consumer on ${place.consumer}`).join('; ')

/** Resolves once each instance has its two connections and `ok` holds for each instance's placement. */
async function settled (stage: Stage, ok: (place: Placement, i: number) => boolean, what: string): Promise<Placement[]> {
  let where: Placement[] = []
  let problem = ''
  await waitFor(async () => {
    try {
      where = await placements(stage)
    } catch (error) {
      // A connection closing on a stopping node may still be listed beside its successor: look again.
      problem = (error as Error).message
      return false
    }
    problem = ''
    return where.every((place, i) => place.publisher !== undefined && place.consumer !== undefined && ok(place, i))
  }, { what, timeoutMs: 20_000, intervalMs: 250, detail: () => problem === '' ? describe(stage, where) : problem })
  return where
}

const on = (place: Placement, node: string): boolean => place.publisher === node || place.consumer === node

/** Closes an instance's two connections from the broker's side: they come back on the next node of its list. */
async function moveConnections (stage: Stage, i: number, where: Placement[]): Promise<Placement[]> {
  const member = stage.members[i] as Member
  const from = where[i] as Placement
  const connections = await namedConnections((name) => name.startsWith(CONNECTION) && name.includes(` ${member.prefix}.`))
  await Promise.all(connections.map((connection) => closeConnection(connection.pid, 'evsock fault test: moving the instance to another node')))
  return await settled(stage, (place, j) => j !== i || (place.publisher !== from.publisher && place.consumer !== from.consumer), `instance ${member.label}'s connections on another node`)
}

interface Picked {
  node: string
  /** Why this node (a t.comment). */
  why: string
  /** What to check once the node is down and the instances settled elsewhere. */
  check?: (t: Test, after: Placement[]) => Promise<void>
}

interface Fault {
  name: string
  pick: (stage: Stage) => Promise<Picked>
}

const FAULTS: Fault[] = [
  {
    name: 'the node holding an instance\'s connections stops, then starts again',
    pick: async (stage) => {
      const where = await placements(stage)
      // An instance whose two connections share a node (both start on one; they part only if their failovers went apart).
      const i = Math.max(0, where.findIndex((place) => place.publisher === place.consumer))
      const node = where[i]?.consumer as string
      const label = stage.members[i]?.label
      return {
        node,
        why: `stopping ${node}: it holds instance ${label}'s connections (${describe(stage, where)})`,
        check: async (t, after) => {
          const moved = after[i] as Placement
          t.ok(!on(moved, node), `instance ${label}'s connections failed over to another node (publisher ${moved.publisher}, consumer ${moved.consumer})`)
        }
      }
    }
  },
  {
    name: 'the node leading an instance\'s queue (history: the stream) stops, then starts again',
    pick: async (stage) => {
      let where = await placements(stage)
      const queues = stage.history ? where.map(() => stage.stream) : where.map((place) => place.queue as string)
      const leaders = (await queueInfos(queues)).map((info) => info.leader)
      // Preferably a leader that holds no connection of the instances: the queue then fails over under consumers that stay.
      const i = Math.max(0, leaders.findIndex((leader) => where.every((place) => !on(place, leader))))
      const node = leaders[i] as string
      const label = stage.members[i]?.label
      // Quorum queues and streams are led by the node of the connection that declared them
      // (client-local), so that the leader holds connections is the rule: those move first.
      const moved: string[] = []
      for (const [j, member] of stage.members.entries()) {
        // The next node may be the leader too; the one after is not.
        for (let moves = 0; on(where[j] as Placement, node); moves++) {
          if (moves === 2) throw new Error(`instance ${member.label}'s connections stay on ${node} after two moves: ${describe(stage, where)}`)
          where = await moveConnections(stage, j, where)
          moved.push(member.label)
        }
      }
      const how = moved.length === 0
        ? 'no connection of the instances was on it'
        : `connections of instance ${[...new Set(moved)].join(' and ')} were on it: closed at the broker first, they came back elsewhere`
      const before = where
      const queue = queues[i] as string
      return {
        node,
        why: `stopping ${node}: it leads ${stage.history ? 'the history stream' : `instance ${label}'s queue`} ${queue}; ${how} (${describe(stage, where)})`,
        check: async (t, after) => {
          t.same(after, before, 'the instances kept their connections where they were')
          let leader = ''
          await waitFor(async () => (leader = await queueLeader(queue)) !== node, { what: `a new leader of ${queue}`, timeoutMs: 20_000, intervalMs: 250 })
          t.pass(`${queue}'s leadership moved to ${leader}`)
        }
      }
    }
  },
  {
    name: 'a node holding no connection of the instances stops, then starts again',
    pick: async (stage) => {
      const where = await placements(stage)
      const used = new Set(where.flatMap((place) => [place.publisher, place.consumer]))
      const free = allNodes.filter((node) => !used.has(node))
      const node = free[0] ?? allNodes[2] as string
      return {
        node,
        why: free.length > 0
          ? `stopping ${node}: no connection of the instances is on it (${describe(stage, where)})`
          : `stopping ${node}: every node holds a connection of the instances, so this one is any (${describe(stage, where)})`,
        check: async (t, after) => {
          if (free.length > 0) t.same(after, where, 'the instances kept their connections where they were')
        }
      }
    }
  }
]

/** The bus's connection losses and recoveries logged since `from`, in ms from `zero`: `A lost +12 ms (consumer), up again on amqp://… +480 ms`. */
function outages (stage: Stage, from: number, zero: number): string {
  const lines = stage.logs.slice(from).filter((line) => /connection lost|up again/.test(line.msg))
  const at = (line: LogLine): string => `${Math.round(line.at - zero)} ms`
  return lines.map((line) => /lost/.test(line.msg) ? `${line.member} lost at +${at(line)} (${line.connection})` : `${line.member} up again on ${line.node} at +${at(line)}`).join(', ')
}

/**
 * One fault under continuous publishing from both instances, then every
 * check. `script`: also check what the script's `status` says meanwhile.
 */
async function faultCase (t: Test, stage: Stage, fault: Fault, script: boolean): Promise<void> {
  const first = stage.published.length
  const publishers: Publishers[] = stage.members.map((member, i) => startPublishers(t, member.server.app, { publishers: 1, first: first + i, batch: 4, pauseMs: 10 }))
  const watched = stage.members.flatMap((member) => member.clients)
  for (const { arrivals } of watched) arrivals.reset()
  const logFrom = stage.logs.length
  await flowing(stage, 50, 'events to flow before the fault')

  const { node, why, check } = await fault.pick(stage)
  t.comment(why)
  const n = numberOf(node)
  const logStop = stage.logs.length
  // Whatever fails below, the node runs again afterwards (start-node is a no-op on a running node).
  t.teardown(() => startNode(n))
  const stopAt = stampClock()
  await stopNode(n)
  const downAt = stampClock()
  for (const { arrivals } of watched) arrivals.await(downAt)
  const [running] = await Promise.all([
    runningNodes(),
    waitFor(() => watched.every(({ arrivals }) => arrivals.firstAfter !== undefined), {
      what: `an event published after ${node} stopped, at every client`,
      timeoutMs: 30_000,
      detail: () => watched.map(({ client }) => client.describe()).join('\n')
    })
  ])
  const flowAt = Math.max(...watched.map(({ arrivals }) => arrivals.firstAfter as number))
  t.same(running, allNodes.filter((other) => other !== node), `stop-node ${n} took ${node} out of the cluster`)
  t.not(await probe(clusterUrls[n - 1] as string), undefined, `${node}'s port takes no connection`)
  if (script) t.not((await scriptStatus()).code, 0, '`status` exits non-zero with a node down')
  const after = await settled(stage, (place) => !on(place, node), `both instances' connections on running nodes, none on ${node}`)
  await check?.(t, after)

  const startAt = stampClock()
  await startNode(n)
  const startedAt = stampClock()
  t.equal(await probe(clusterUrls[n - 1] as string), undefined, `start-node ${n}: ${node} takes connections again`)
  if (script) {
    const status = await scriptStatus()
    t.same([status.code, status.stdout.trim().split('\n')], [0, allNodes], '`status` exits 0 and lists the three nodes again')
  }
  await flowing(stage, 50, `events after ${node} started again`)
  const endAt = stampClock()
  await Promise.all(publishers.map((publishing) => publishing.stop()))

  for (const [i, publishing] of publishers.entries()) stage.published[first + i] = publishing.published[0] as Published[]
  const rejected = publishers.flatMap((publishing) => publishing.rejected)
  stage.maybe.push(...rejected.map(({ p, n, topic }) => ({ p, n, topic })))
  const codes = rejected.map(({ error }) => (error as { code?: string }).code ?? String(error))
  const resolved = publishers.reduce((sum, publishing) => sum + publishing.count(), 0)
  t.same(codes.filter((code) => code !== UNAVAILABLE), [], `every publish that failed was rejected with ${UNAVAILABLE}`)
  await Promise.all(stage.clients.map((client) => client.sentinels(stage.published.length)))

  const pause = (from: number, to: number): number => Math.round(Math.max(...watched.map(({ arrivals }) => arrivals.longestPause(from, to))))
  t.comment(`failover: deliveries paused at most ${pause(stopAt, flowAt)} ms at a client, from the stop to the first event published after it ` +
    `(stop-node took ${Math.round(downAt - stopAt)} ms); at most ${pause(startAt, endAt)} ms around the start (start-node took ${Math.round(startedAt - startAt)} ms)`)
  const logged = outages(stage, logStop, stopAt)
  t.comment(`the instances' logs, from stop-node: ${logged === '' ? 'no connection lost' : logged}`)
  t.comment(`publishes: ${resolved} resolved, ${rejected.length} rejected${rejected.length === 0 ? '' : ` (${[...new Set(codes)].join(', ')})`}`)

  for (const member of stage.members) {
    for (const [i, { client }] of member.clients.entries()) {
      const name = `instance ${member.label} client ${i} (${client.patterns.join(' ')})`
      const only = stage.history ? undefined : ['missing', 'duplicate', 'unexpected'] as const
      const report = client.report(stage.published, { only, maybe: stage.maybe })
      t.ok(report === '', `${name}: every resolved publish matching its patterns, once${stage.history ? ', in order per publisher' : ''}`, { report })
      if (!stage.history) {
        const order = client.report(stage.published, { only: ['order'], maybe: stage.maybe })
        t.comment(`${name}: ${order === '' ? 'in publish order per publisher' : `order not kept: ${order}`}`)
      }
      t.equal(client.disconnects.length, 0, `${name}: stayed connected`)
    }
  }
  await queuesAsWanted(t, stage, after)

  if (!t.passing()) {
    const lines = stage.logs.slice(logFrom).map((line) => `${Math.round(line.at - stopAt)} ms ${line.member} ${line.msg} ${JSON.stringify({ connection: line.connection, node: line.node, lastError: line.lastError })}`)
    t.comment(`logs from the case (ms from stop-node):\n${lines.join('\n')}`)
  }
}

/**
 * Every replica back online on the three nodes (so that the next stop
 * leaves a majority). History off: each instance queue is a quorum queue
 * bound to exactly its sockets' patterns (as broker keys), and nothing else
 * is bound; on: only the stream, bound to everything, and no instance queue.
 */
async function queuesAsWanted (t: Test, stage: Stage, where: Placement[]): Promise<void> {
  const queues = stage.history ? [stage.stream] : where.map((place) => place.queue as string)
  let infos: QueueInfo[] = []
  const offline = (): string => infos.filter((info) => info.online.length < 3).map((info) => `${info.name}: ${info.online.join(', ')}`).join('; ')
  await waitFor(async () => {
    infos = await queueInfos(queues)
    return offline() === ''
  }, { what: 'every replica online on the three nodes', timeoutMs: 30_000, intervalMs: 250, detail: offline })
  t.same(infos.map((info) => info.type), queues.map(() => stage.history ? 'stream' : 'quorum'), `${stage.history ? 'the stream' : 'each instance queue is a quorum queue that'} has a replica online on each node`)
  const [bindings, names] = await Promise.all([bindingsOf(stage.exchange, clusterSite), queuesNamed(stage.exchange, clusterSite)])
  t.same(names.sort(), [...queues].sort(), stage.history ? 'no queue of the test but the stream' : 'no queue of the test but the two instance queues')
  if (stage.history) {
    t.same(bindings, [{ queue: stage.stream, key: '#' }], 'the stream, bound with #, is the only binding of the exchange')
    return
  }
  for (const [i, member] of stage.members.entries()) {
    const wanted = [...new Set(member.clients.flatMap(({ client }) => client.patterns.map(brokerKey)))].sort()
    const bound = bindings.filter((binding) => binding.queue === queues[i]).map((binding) => binding.key).sort()
    t.same(bound, wanted, `instance ${member.label}'s queue is bound to its patterns' keys: ${wanted.join(' ')}`)
  }
  t.same(bindings.filter((binding) => !queues.includes(binding.queue)), [], 'no other queue is bound to the exchange')
}

async function closeStage (t: Test, stage: Stage): Promise<void> {
  await Promise.all(stage.clients.map((client) => client.client.close()))
  await Promise.all(stage.members.map((member) => member.server.app.close()))
  const [names, bindings] = await Promise.all([queuesNamed(stage.exchange, clusterSite), bindingsOf(stage.exchange, clusterSite)])
  t.same(names, stage.history ? [stage.stream] : [], stage.history ? 'no queue of the test remains but the shared stream' : 'no queue of the test remains')
  t.same(bindings, stage.history ? [{ queue: stage.stream, key: '#' }] : [], stage.history ? 'no binding remains but the stream\'s' : 'no binding remains')
}

/** Every node runs, and takes connections: a failed run's teardown may still be starting one. */
async function allRunning (): Promise<boolean> {
  const probes = await Promise.all(clusterUrls.map((url) => probe(url)))
  return probes.every((problem) => problem === undefined) && (await runningNodes()).join() === allNodes.join()
}

const anyNodeUp = (await Promise.all(clusterUrls.map((url) => probe(url)))).some((problem) => problem === undefined)
if (anyNodeUp) {
  await waitFor(() => allRunning().catch(() => false), { what: 'the three cluster nodes running', timeoutMs: 90_000, intervalMs: 500 })
    .catch((error: unknown) => { t.fail((error as Error).message) })
}

if (await requireCluster(t)) {
  for (const history of [false, true]) {
    t.test(`history ${history ? 'on' : 'off'}: two instances publishing on the cluster, one node stopped and started at a time`, async (t) => {
      const stage = await startStage(t, history)
      for (const [i, fault] of FAULTS.entries()) await t.test(fault.name, (t) => faultCase(t, stage, fault, !history && i === 0))
      await t.test('once the instances close, no binding and no queue of theirs is left', (t) => closeStage(t, stage))
    })
  }
}
