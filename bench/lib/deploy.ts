// One peer under test: its server processes on the server core, the
// generator processes holding its client sockets on the other core, and the
// readings every scenario takes from them.
import { setTimeout as sleep } from 'node:timers/promises'
import { Child } from './rpc.js'
import { GENERATOR_CORE, SERVER_CORE, SOCKETS_PER_GENERATOR } from './config.js'
import { worst, type LatencySummary } from './hist.js'
import { brokerPortsOf, PEERS, type PeerName } from './peers.js'
import type { ConnectArgs } from '../gen/main.js'
import type { PeerOptions } from '../server/peer.js'
import type { DriveArgs } from '../server/main.js'

const SERVER = new URL('../server/main.ts', import.meta.url)
const GENERATOR = new URL('../gen/main.ts', import.meta.url)

export interface Snapshot {
  /** performance.now() when the readings came back, ms. */
  at: number
  /** Events received by every client so far. */
  events: number
  /** Clients whose connection is closed. */
  closed: number
  /** Of those, the clients that never stopped reading. */
  healthyClosed: number
  /** The closed clients by the close code the server sent ('none': no close frame). */
  closeCodes: Record<string, number>
  /** CPU time of all server processes so far, microseconds. */
  cpu: number
  /** The same, by server process (instance 0 publishes). */
  cpus: number[]
  /** CPU time of all generator processes so far, microseconds. */
  generatorCpu: number
}

export type ClientOptions = Pick<ConnectArgs, 'topic' | 'compression' | 'ackEvery'>

const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0)

/** Counts by key, added up. */
function mergeCounts (all: Array<Record<string, number>>): Record<string, number> {
  const merged: Record<string, number> = {}
  for (const counts of all) for (const [key, count] of Object.entries(counts)) merged[key] = (merged[key] ?? 0) + count
  return merged
}

export class Deployment {
  private generators: Child[] = []

  private constructor (readonly name: PeerName, readonly servers: Child[], readonly ports: number[]) {}

  static async start (name: PeerName, options: Omit<PeerOptions, 'instance'> = {}): Promise<Deployment> {
    const spec = PEERS[name]
    const servers = Array.from({ length: spec.instances }, (_, i) => new Child(`${name}#${i}`, SERVER, SERVER_CORE))
    const ports = await Promise.all(servers.map((server, instance) =>
      server.call<number>('start', { module: spec.module, options: { ...spec.options, ...options, instance } })))
    return new Deployment(name, servers, ports)
  }

  get proto (): ConnectArgs['proto'] { return PEERS[this.name].proto }

  /** The AMQP ports of the RabbitMQ nodes it uses, whose CPU fixed-rate points read. */
  get brokerPorts (): number[] { return brokerPortsOf(this.name) }

  /** Opens `count` more client connections, SOCKETS_PER_GENERATOR per generator process. */
  async connect (count: number, options: ClientOptions = {}): Promise<void> {
    const offset = this.generators.length * SOCKETS_PER_GENERATOR
    const added = Array.from({ length: Math.ceil(count / SOCKETS_PER_GENERATOR) },
      (_, i) => new Child(`${this.name} generator ${this.generators.length + i}`, GENERATOR, GENERATOR_CORE))
    this.generators = this.generators.concat(added)
    await Promise.all(added.map((generator, i) => generator.call('connect', {
      ...options,
      proto: this.proto,
      ports: this.ports,
      offset: offset + i * SOCKETS_PER_GENERATOR,
      count: Math.min(SOCKETS_PER_GENERATOR, count - i * SOCKETS_PER_GENERATOR)
    } satisfies ConnectArgs)))
  }

  /** A generator process of its own, for calls that open their own sockets (handshakes). */
  generator (): Child {
    const generator = new Child(`${this.name} generator`, GENERATOR, GENERATOR_CORE)
    this.generators.push(generator)
    return generator
  }

  async snapshot (): Promise<Snapshot> {
    const [counts, cpu, generatorCpu] = await Promise.all([
      Promise.all(this.generators.map((g) => g.call<{ events: number, closed: number, healthyClosed: number, closeCodes: Record<string, number> }>('counts'))),
      Promise.all(this.servers.map((s) => s.call<number>('cpu'))),
      Promise.all(this.generators.map((g) => g.call<number>('cpu')))
    ])
    return {
      at: performance.now(),
      events: sum(counts.map((c) => c.events)),
      closed: sum(counts.map((c) => c.closed)),
      healthyClosed: sum(counts.map((c) => c.healthyClosed)),
      closeCodes: mergeCounts(counts.map((c) => c.closeCodes)),
      cpu: sum(cpu),
      cpus: cpu,
      generatorCpu: sum(generatorCpu)
    }
  }

  /** Publishes `count` events from instance 0 and waits until the bus has them all. */
  fill (args: { count: number, size: number, topic: string }): Promise<number> {
    return this.servers[0]!.call<number>('fill', args)
  }

  drive (args: DriveArgs): Promise<void> { return this.servers[0]!.call('drive', args) }

  /**
   * Stops publishing and, with `drain`, waits until the clients have received
   * all that is on its way, so that the next point starts clean.
   */
  async halt (drain = true): Promise<number> {
    const published = await this.servers[0]!.call<number>('halt')
    if (!drain) return published
    let last = -1
    // Two quiet readings 40 ms apart: long enough for frames in flight on loopback, short enough for 84 points.
    for (let quiet = 0; quiet < 2;) {
      await sleep(40)
      const { events } = await this.snapshot()
      quiet = events === last ? quiet + 1 : 0
      last = events
    }
    return published
  }

  stats (): Promise<Array<Record<string, number>>> {
    return Promise.all(this.servers.map((s) => s.call<Record<string, number>>('stats')))
  }

  memory (): Promise<Array<{ heap: number, rss: number }>> {
    return Promise.all(this.servers.map((s) => s.call<{ heap: number, rss: number }>('memory')))
  }

  /** The first `fraction` of each generator's clients stop reading. */
  async pause (fraction: number): Promise<number> {
    return sum(await Promise.all(this.generators.map((g) => g.call<number>('pause', { fraction }))))
  }

  async recordLatency (): Promise<void> {
    await Promise.all(this.generators.map((g) => g.call('recordLatency')))
  }

  async latency (): Promise<LatencySummary> {
    return worst(await Promise.all(this.generators.map((g) => g.call<LatencySummary>('latency'))))
  }

  async recordFanout (): Promise<void> {
    await Promise.all(this.servers.map((s) => s.call('recordFanout')))
  }

  /** The servers' fan-out times, µs (the worst of each percentile over the instances); undefined when the peer has no timer. */
  async fanoutTime (): Promise<LatencySummary | undefined> {
    const summaries = (await Promise.all(this.servers.map((s) => s.call<LatencySummary | undefined>('fanoutTime'))))
      .filter((summary) => summary !== undefined)
    return summaries.length === 0 ? undefined : worst(summaries)
  }

  async stop (): Promise<void> {
    await Promise.all(this.generators.map((g) => g.stop()))
    await Promise.all(this.servers.map(async (s) => {
      await s.call('stop').catch(() => undefined)
      await s.stop()
    }))
  }
}

/**
 * Starts every one of `peers` at once, runs `body` with their deployments (in
 * the same order), and stops them all whatever happens: the rounds of a point
 * then take turns on running peers.
 */
export async function withPeers<T> (peers: PeerName[], options: Omit<PeerOptions, 'instance'>, body: (deployments: Deployment[]) => Promise<T>): Promise<T> {
  const started = await Promise.allSettled(peers.map((name) => Deployment.start(name, options)))
  const deployments = started.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
  try {
    const failed = started.find((result) => result.status === 'rejected')
    if (failed !== undefined) throw failed.reason
    return await body(deployments)
  } finally {
    for (const deployment of deployments) await deployment.stop()
  }
}

/** Starts `name`, runs `body`, and stops it whatever happens. */
export async function withPeer<T> (name: PeerName, options: Omit<PeerOptions, 'instance'>, body: (d: Deployment) => Promise<T>): Promise<T> {
  const deployment = await Deployment.start(name, options)
  try {
    return await body(deployment)
  } finally {
    await deployment.stop()
  }
}
