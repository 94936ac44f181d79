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
// (issue 12; docs/rabbitmq.md, "Running on a cluster"): two stages side by
// side, one with history off (quorum instance queues) and one with history on
// (the shared stream), each of two instances on broker.url = the cluster's
// nodes, each publishing and each with bundled clients subscribed to
// wildcard patterns. One node stops and starts again under both stages at
// once: the one holding instances' connections (one of each stage), the one
// leading the history stream (with the instance queues it leads, if any),
// one that holds none of their connections. After each: every publish that
// resolved reached every client whose patterns match it (with history on
// exactly once and in order; off, no duplicate), every publish that failed
// failed with FST_EVSOCK_BROKER_UNAVAILABLE or FST_EVSOCK_PUBLISH_NACKED (a
// quorum queue whose leader stopped nacks until the next leader takes over),
// and the instance queues are bound to what their sockets want and nothing
// else, nothing at all once the instances close. The first stop also checks the script (stop-node takes
// the node out, start-node brings it back).
//
// The only test file that stops nodes: tap runs files in parallel, and a
// second file stopping another node would take the cluster's majority away.

// Three node stops and starts of 15 to 35 s each (a loaded two-core machine), with the failovers and checks between (rabbitmqctl takes 1 to 2 s a call).
t.setTimeout(300_000)

const allNodes = [nodeName(1), nodeName(2), nodeName(3)]
const numberOf = (node: string): number => allNodes.indexOf(node) + 1
/** Between two looks at the cluster while waiting: each is a rabbitmqctl, an Erlang VM of 1 to 2 s of CPU. */
const POLL_MS = 1000

/**
 * How a publish may fail during a failover: unconfirmed when its connection
 * dropped, or nacked by a quorum queue (or the stream) whose leader was
 * stopping, which RabbitMQ does for the publishes routed to it until a new
 * leader is elected (docs/rabbitmq.md, "Running on a cluster").
 */
const FAILOVER_CODES = ['FST_EVSOCK_BROKER_UNAVAILABLE', 'FST_EVSOCK_PUBLISH_NACKED']

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
  /** `A (history off)`: which instance of which stage, for messages. */
  name: string
  server: TestServer
  /** Its queuePrefix: names its connections (and, history off, its queue). */
  prefix: string
  clients: Watched[]
}

interface LogLine {
  at: number
  member: string
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
}

const modeOf = (history: boolean): string => `history ${history ? 'on' : 'off'}`

/** Two instances on the cluster's nodes, quorum instance queues, with their clients subscribed; their logs go to `logs`. */
async function startStage (t: Test, history: boolean, logs: LogLine[]): Promise<Stage> {
  const options = clusterOptions(t, { history, broker: { queueType: 'quorum' } }, clusterSite)
  const broker = options.broker as BrokerOptions & { exchange: string, queuePrefix: string }
  const members = await Promise.all((['A', 'B'] as const).map(async (label): Promise<Member> => {
    const prefix = `${broker.queuePrefix}.${label}`
    const name = `${label} (${modeOf(history)})`
    // The bus logs every connection lost and up again, with its node: the evidence when a case fails.
    const stream = {
      write: (line: string) => {
        const { level, msg, connection, node, lastError } = JSON.parse(line) as Omit<LogLine, 'at' | 'member'>
        logs.push({ at: stampClock(), member: name, level, msg, connection, node, lastError })
      }
    }
    const server = await startServer(t, { ...options, broker: { ...broker, queuePrefix: prefix } }, undefined, { level: 'info', stream })
    const token = server.sign({ sub: 'reader', role: 'admin' })
    const clients = await Promise.all(CLIENTS[label].map(async ({ patterns, format }) => {
      const arrivals = new Arrivals()
      const client = await recordingClient(t, { url: server.url, token, patterns: [...patterns], format, onEvent: (_pattern, stamp) => { arrivals.see(stamp) } })
      return { client, arrivals }
    }))
    return { label, name, server, prefix, clients }
  }))
  return {
    history,
    exchange: broker.exchange,
    stream: `${broker.exchange}.history`,
    members,
    clients: members.flatMap((member) => member.clients.map(({ client }) => client)),
    published: [],
    maybe: []
  }
}

/** Where one instance's two connections are, and its queue's name (history off). */
interface Placement {
  publisher: string | undefined
  consumer: string | undefined
  queue: string | undefined
}

/** Placements of every instance, stage by stage, as `stages[s].members[i]` is placed at `where[s][i]`. */
type Placements = Placement[][]

const CONNECTION = 'fastify-event-socket '

/** Where every instance of the stages is, from one listing of the cluster's connections. */
async function placements (stages: Stage[]): Promise<Placements> {
  const connections = await namedConnections((name) => name.startsWith(CONNECTION))
  return stages.map((stage) => stage.members.map((member) => {
    const mine = connections.filter((connection) => connection.name.includes(` ${member.prefix}.`))
    const of = (role: string): { name: string, node: string } | undefined => {
      const found = mine.filter((connection) => connection.name.startsWith(`${CONNECTION}${role} `))
      if (found.length > 1) throw new Error(`instance ${member.name} has ${found.length} ${role} connections: ${found.map((each) => each.node).join(', ')}`)
      return found[0]
    }
    const consumer = of('consumer')
    return { publisher: of('publisher')?.node, consumer: consumer?.node, queue: consumer?.name.slice(`${CONNECTION}consumer `.length) }
  }))
}

const describe = (stages: Stage[], where: Placements): string =>
  stages.flatMap((stage, s) => stage.members.map((member, i) => {
    const place = where[s]?.[i]
    return `${member.name}: publisher on ${place?.publisher}, consumer on ${place?.consumer}`
  })).join('; ')

/** Resolves once every instance has its two connections and `ok` holds for each placement. */
async function settled (stages: Stage[], ok: (place: Placement, s: number, i: number) => boolean, what: string): Promise<Placements> {
  let where: Placements = []
  let problem = ''
  await waitFor(async () => {
    try {
      where = await placements(stages)
    } catch (error) {
      // A connection closing on a stopping node may still be listed beside its successor: look again.
      problem = (error as Error).message
      return false
    }
    problem = ''
    return where.every((places, s) => places.every((place, i) => place.publisher !== undefined && place.consumer !== undefined && ok(place, s, i)))
  }, { what, timeoutMs: 30_000, intervalMs: POLL_MS, detail: () => problem === '' ? describe(stages, where) : problem })
  return where
}

const on = (place: Placement | undefined, node: string): boolean => place !== undefined && (place.publisher === node || place.consumer === node)

/** Closes instance `i` of stage `s`'s two connections from the broker's side: they come back on the next node of its list. */
async function moveConnections (stages: Stage[], s: number, i: number, where: Placements): Promise<Placements> {
  const member = stages[s]?.members[i] as Member
  const from = where[s]?.[i] as Placement
  const connections = await namedConnections((name) => name.startsWith(CONNECTION) && name.includes(` ${member.prefix}.`))
  await Promise.all(connections.map((connection) => closeConnection(connection.pid, 'evsock fault test: moving the instance to another node')))
  return await settled(stages, (place, t, j) => t !== s || j !== i || (place.publisher !== from.publisher && place.consumer !== from.consumer),
    `instance ${member.name}'s connections on another node`)
}

/** Moves instance `i` of stage `s` along its node list (at most twice: three nodes) until `wanted` holds for its placement. */
async function moveUntil (stages: Stage[], s: number, i: number, where: Placements, wanted: (place: Placement) => boolean): Promise<Placements> {
  for (let moves = 0; !wanted(where[s]?.[i] as Placement); moves++) {
    if (moves === 2) throw new Error(`instance ${stages[s]?.members[i]?.name} is still not where it is wanted after two moves: ${describe(stages, where)}`)
    where = await moveConnections(stages, s, i, where)
  }
  return where
}

interface Picked {
  node: string
  /** Why this node: what it holds, logged before it stops. */
  why: string
  /** What to check once the node is down and the instances settled elsewhere. */
  check?: (t: Test, after: Placements) => Promise<void>
}

interface Fault {
  name: string
  pick: (stages: Stage[]) => Promise<Picked>
}

const FAULTS: Fault[] = [
  {
    name: 'the node holding instances\' connections (one of each stage) stops, then starts again',
    pick: async (stages) => {
      let where = await placements(stages)
      // The node of an instance of the first stage whose two connections share it (both start on one; they part only if their failovers went apart).
      const first = where[0] as Placement[]
      const node = (first.find((place) => place.publisher === place.consumer) ?? first[0] as Placement).consumer as string
      // Every other stage gets an instance there too, moved along its node list if none is.
      for (let s = 1; s < stages.length; s++) {
        if (where[s]?.some((place) => on(place, node)) !== true) where = await moveUntil(stages, s, 0, where, (place) => on(place, node))
      }
      const held = stages.flatMap((stage, s) => stage.members.flatMap((member, i) => on(where[s]?.[i], node) ? [{ s, i, name: member.name }] : []))
      return {
        node,
        why: `stopping ${node}: it holds connections of ${held.map((h) => h.name).join(', ')} (${describe(stages, where)})`,
        check: async (t, after) => {
          for (const { s, i, name } of held) {
            const moved = after[s]?.[i] as Placement
            t.ok(!on(moved, node), `instance ${name}'s connections failed over to another node (publisher ${moved.publisher}, consumer ${moved.consumer})`)
          }
        }
      }
    }
  },
  {
    name: 'the node leading the history stream (and any instance queue it leads) stops, then starts again',
    pick: async (stages) => {
      let where = await placements(stages)
      const onStage = stages.findIndex((stage) => stage.history)
      const offStage = stages.findIndex((stage) => !stage.history)
      const stream = (stages[onStage] as Stage).stream
      const instanceQueues = (where[offStage] as Placement[]).map((place) => place.queue as string)
      const [streamInfo, ...queueInfosNow] = await queueInfos([stream, ...instanceQueues])
      const node = (streamInfo as QueueInfo).leader
      const led = instanceQueues.filter((_, i) => queueInfosNow[i]?.leader === node)
      // Quorum queues and streams are led by the node of the connection that declared them
      // (client-local), so that the leader holds connections is the rule: those move first,
      // and the queues then fail over under consumers that stay.
      const moved: string[] = []
      for (const [s, stage] of stages.entries()) {
        for (const [i, member] of stage.members.entries()) {
          if (!on(where[s]?.[i], node)) continue
          // The next node may be the leader too; the one after is not.
          where = await moveUntil(stages, s, i, where, (place) => !on(place, node))
          moved.push(member.name)
        }
      }
      const how = moved.length === 0
        ? 'no connection of the instances was on it'
        : `connections of ${moved.join(', ')} were on it: closed at the broker first, they came back elsewhere`
      const before = where
      const leads = led.length === 0 ? 'no instance queue (history off: its queues\' leaders stay where they are)' : `instance queue${led.length === 1 ? '' : 's'} ${led.join(', ')}`
      return {
        node,
        why: `stopping ${node}: it leads the history stream ${stream} and ${leads}; ${how} (${describe(stages, where)})`,
        check: async (t, after) => {
          t.same(after, before, 'the instances kept their connections where they were')
          for (const queue of [stream, ...led]) {
            let leader = ''
            await waitFor(async () => (leader = await queueLeader(queue)) !== node, { what: `a new leader of ${queue}`, timeoutMs: 30_000, intervalMs: POLL_MS })
            t.pass(`${queue}'s leadership moved to ${leader}`)
          }
        }
      }
    }
  },
  {
    name: 'a node holding no connection of the instances stops, then starts again',
    pick: async (stages) => {
      const where = await placements(stages)
      const used = new Set(where.flat().flatMap((place) => [place.publisher, place.consumer]))
      const free = allNodes.filter((node) => !used.has(node))
      const node = free[0] ?? allNodes[2] as string
      return {
        node,
        why: free.length > 0
          ? `stopping ${node}: no connection of the instances is on it (${describe(stages, where)})`
          : `stopping ${node}: every node holds a connection of the instances, so this one is any (${describe(stages, where)})`,
        check: async (t, after) => {
          if (free.length > 0) t.same(after, where, 'the instances kept their connections where they were')
        }
      }
    }
  }
]

/** The bus's connection losses and recoveries logged since `from`, in ms from `zero`: `A lost +12 ms (consumer), up again on amqp://… +480 ms`. */
function outages (logs: LogLine[], from: number, zero: number): string {
  const lines = logs.slice(from).filter((line) => /connection lost|up again/.test(line.msg))
  const at = (line: LogLine): string => `${Math.round(line.at - zero)} ms`
  return lines.map((line) => /lost/.test(line.msg) ? `${line.member} lost at +${at(line)} (${line.connection})` : `${line.member} up again on ${line.node} at +${at(line)}`).join(', ')
}

/** Every line the instances logged from `from`, the first 30: for a case that failed before its own summary. */
function everyLine (logs: LogLine[], from: number, zero: number): string {
  const lines = logs.slice(from, from + 30)
  if (lines.length === 0) return 'none'
  return lines.map((line) => `${line.member} +${Math.round(line.at - zero)} ms [${line.level}] ${line.msg}` +
    `${line.node === undefined ? '' : ` on ${line.node}`}${line.lastError === undefined ? '' : ` (${line.lastError})`}`).join('; ')
}

/**
 * One fault under continuous publishing from every instance of both stages,
 * then every check. `script`: also check what the script's `status` says meanwhile.
 */
async function faultCase (t: Test, stages: Stage[], logs: LogLine[], fault: Fault, script: boolean): Promise<void> {
  // A CI log may keep only the end of a failed case: its last comment repeats what failed.
  const failed: string[] = []
  t.on('assert', (result: { ok: boolean, name: string, diag?: unknown }) => {
    if (!result.ok) failed.push(`${result.name} ${JSON.stringify(result.diag ?? {}).slice(0, 400)}`)
  })
  const firsts = stages.map((stage) => stage.published.length)
  // ~50 events/s an instance: continuous through every failover, light enough for a loaded two-core machine.
  const publishers: Publishers[][] = stages.map((stage, s) => stage.members.map((member, i) =>
    startPublishers(t, member.server.app, { publishers: 1, first: (firsts[s] as number) + i, batch: 4, pauseMs: 80 })))
  const watched = stages.flatMap((stage) => stage.members.flatMap((member) => member.clients))
  for (const { arrivals } of watched) arrivals.reset()
  const logFrom = logs.length
  await Promise.all(stages.map((stage) => flowing(stage, 20, `events of ${modeOf(stage.history)} to flow before the fault`)))

  const { node, why, check } = await fault.pick(stages)
  t.comment(why)
  const n = numberOf(node)
  const logStop = logs.length
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
      // The instances' own account of their connections, the evidence of a consumer that did not come back.
      detail: () => `${watched.map(({ client }) => client.describe()).join('\n')}\nthe instances' logs, from stop-node: ${everyLine(logs, logStop, stopAt)}`
    })
  ])
  const flowAt = Math.max(...watched.map(({ arrivals }) => arrivals.firstAfter as number))
  t.same(running, allNodes.filter((other) => other !== node), `stop-node ${n} took ${node} out of the cluster`)
  t.not(await probe(clusterUrls[n - 1] as string), undefined, `${node}'s port takes no connection`)
  if (script) t.not((await scriptStatus()).code, 0, '`status` exits non-zero with a node down')
  const after = await settled(stages, (place) => !on(place, node), `every instance's connections on running nodes, none on ${node}`)
  await check?.(t, after)

  const startAt = stampClock()
  await startNode(n)
  const startedAt = stampClock()
  t.equal(await probe(clusterUrls[n - 1] as string), undefined, `start-node ${n}: ${node} takes connections again`)
  if (script) {
    const status = await scriptStatus()
    t.same([status.code, status.stdout.trim().split('\n')], [0, allNodes], '`status` exits 0 and lists the three nodes again')
  }
  await Promise.all(stages.map((stage) => flowing(stage, 20, `events of ${modeOf(stage.history)} after ${node} started again`)))
  const endAt = stampClock()
  await Promise.all(publishers.flat().map((publishing) => publishing.stop()))

  const pause = (from: number, to: number): number => Math.round(Math.max(...watched.map(({ arrivals }) => arrivals.longestPause(from, to))))
  t.comment(`failover: deliveries paused at most ${pause(stopAt, flowAt)} ms at a client, from the stop to the first event published after it ` +
    `(stop-node took ${Math.round(downAt - stopAt)} ms); at most ${pause(startAt, endAt)} ms around the start (start-node took ${Math.round(startedAt - startAt)} ms)`)
  const logged = outages(logs, logStop, stopAt)
  t.comment(`the instances' logs, from stop-node: ${logged === '' ? 'no connection lost' : logged}`)

  for (const [s, stage] of stages.entries()) {
    const own = publishers[s] as Publishers[]
    for (const [i, publishing] of own.entries()) stage.published[(firsts[s] as number) + i] = publishing.published[0] as Published[]
    const rejected = own.flatMap((publishing) => publishing.rejected)
    stage.maybe.push(...rejected.map(({ p, n, topic }) => ({ p, n, topic })))
    const codes = rejected.map(({ error }) => (error as { code?: string }).code ?? String(error))
    const resolved = own.reduce((sum, publishing) => sum + publishing.count(), 0)
    t.comment(`${modeOf(stage.history)}: publishes: ${resolved} resolved, ${rejected.length} rejected${rejected.length === 0 ? '' : ` (${[...new Set(codes)].join(', ')})`}`)
    const foreign = codes.filter((code) => !FAILOVER_CODES.includes(code))
    t.same([...new Set(foreign)], [], `${modeOf(stage.history)}: every publish that failed was rejected with ${FAILOVER_CODES.join(' or ')} (${foreign.length} otherwise)`)
  }
  await Promise.all(stages.flatMap((stage) => stage.clients.map((client) => client.sentinels(stage.published.length))))

  for (const stage of stages) {
    for (const member of stage.members) {
      for (const [i, { client }] of member.clients.entries()) {
        const name = `instance ${member.name} client ${i} (${client.patterns.join(' ')})`
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
  }
  for (const [s, stage] of stages.entries()) await queuesAsWanted(t, stage, after[s] as Placement[])

  if (!t.passing()) {
    const lines = logs.slice(logFrom).map((line) => `${Math.round(line.at - stopAt)} ms ${line.member} ${line.msg} ${JSON.stringify({ connection: line.connection, node: line.node, lastError: line.lastError })}`)
    t.comment(`failed:\n${failed.join('\n')}\nlogs from the case (ms from stop-node):\n${lines.join('\n')}`)
  }
}

/**
 * Every replica back online on the three nodes (so that the next stop
 * leaves a majority). History off: each instance queue is a quorum queue
 * bound to exactly its sockets' patterns (as broker keys), and nothing else
 * is bound; on: only the stream, bound to everything, and no instance queue.
 */
async function queuesAsWanted (t: Test, stage: Stage, where: Placement[]): Promise<void> {
  const mode = modeOf(stage.history)
  const queues = stage.history ? [stage.stream] : where.map((place) => place.queue as string)
  let infos: QueueInfo[] = []
  const offline = (): string => infos.filter((info) => info.online.length < 3).map((info) => `${info.name}: ${info.online.join(', ')}`).join('; ')
  await waitFor(async () => {
    infos = await queueInfos(queues)
    return offline() === ''
  }, { what: `every replica of ${mode} online on the three nodes`, timeoutMs: 30_000, intervalMs: POLL_MS, detail: offline })
  t.same(infos.map((info) => info.type), queues.map(() => stage.history ? 'stream' : 'quorum'), `${mode}: ${stage.history ? 'the stream' : 'each instance queue is a quorum queue that'} has a replica online on each node`)
  const [bindings, names] = await Promise.all([bindingsOf(stage.exchange, clusterSite), queuesNamed(stage.exchange, clusterSite)])
  t.same(names.sort(), [...queues].sort(), stage.history ? `${mode}: no queue of the stage but the stream` : `${mode}: no queue of the stage but the two instance queues`)
  if (stage.history) {
    t.same(bindings, [{ queue: stage.stream, key: '#' }], `${mode}: the stream, bound with #, is the only binding of the exchange`)
    return
  }
  for (const [i, member] of stage.members.entries()) {
    const wanted = [...new Set(member.clients.flatMap(({ client }) => client.patterns.map(brokerKey)))].sort()
    const bound = bindings.filter((binding) => binding.queue === queues[i]).map((binding) => binding.key).sort()
    t.same(bound, wanted, `instance ${member.name}'s queue is bound to its patterns' keys: ${wanted.join(' ')}`)
  }
  t.same(bindings.filter((binding) => !queues.includes(binding.queue)), [], `${mode}: no other queue is bound to the exchange`)
}

async function closeStage (t: Test, stage: Stage): Promise<void> {
  const mode = modeOf(stage.history)
  await Promise.all(stage.clients.map((client) => client.client.close()))
  await Promise.all(stage.members.map((member) => member.server.app.close()))
  const [names, bindings] = await Promise.all([queuesNamed(stage.exchange, clusterSite), bindingsOf(stage.exchange, clusterSite)])
  t.same(names, stage.history ? [stage.stream] : [], stage.history ? `${mode}: no queue of the stage remains but the shared stream` : `${mode}: no queue of the stage remains`)
  t.same(bindings, stage.history ? [{ queue: stage.stream, key: '#' }] : [], stage.history ? `${mode}: no binding remains but the stream's` : `${mode}: no binding remains`)
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
  t.test('history off and on side by side: instances publishing on the cluster, one node stopped and started at a time', async (t) => {
    const logs: LogLine[] = []
    const stages = await Promise.all([startStage(t, false, logs), startStage(t, true, logs)])
    for (const [i, fault] of FAULTS.entries()) await t.test(fault.name, (t) => faultCase(t, stages, logs, fault, i === 0))
    await t.test('once the instances close, no binding and no queue of theirs is left', async (t) => {
      for (const stage of stages) await closeStage(t, stage)
    })
  })
}
