// What else happened to the RabbitMQ nodes while a run measured them. The
// machine's node and the local cluster are shared with test suites that set
// off real resource alarms (which block every publishing connection) and stop
// and start cluster nodes; a figure measured meanwhile measures that, not the
// plugin. A watcher keeps a connection to each node and publishes a tiny
// unroutable message on it every WATCH_MS (the broker drops it), so that an
// alarm blocks it and the broker says so; and it compares the nodes'
// processes (a restart changes them). Parts of a run ask what happened since
// a mark, and measure again.
import { connect, type Channel, type ChannelModel } from 'amqplib'
import { nodeProcesses } from './broker-cpu.js'
import { portOf } from './config.js'

const WATCH_MS = 250
/** A routing key no queue binds on the default exchange: the broker drops the message. */
const SENTINEL_KEY = 'evsock.bench.alarm-watch'

interface Node {
  url: string
  connection: ChannelModel | undefined
  channel: Channel | undefined
  connecting: boolean
}

export class Disturbances {
  /** What happened, in order; a mark is an index into it. */
  readonly #events: string[] = []
  readonly #nodes: Node[]
  readonly #ports: number[]
  #processes: string
  readonly #timer: NodeJS.Timeout

  constructor (urls: string[]) {
    this.#nodes = urls.map((url) => ({ url, connection: undefined, channel: undefined, connecting: false }))
    this.#ports = urls.map(portOf)
    this.#processes = nodeProcesses(this.#ports)
    this.#timer = setInterval(() => this.#tick(), WATCH_MS)
    this.#tick()
  }

  /** Where the record stands now. */
  mark (): number {
    return this.#events.length
  }

  /** What happened since `mark`, one line each; empty when nothing did. */
  since (mark: number): string[] {
    return this.#events.slice(mark)
  }

  async close (): Promise<void> {
    clearInterval(this.#timer)
    await Promise.all(this.#nodes.map(async (node) => { await node.connection?.close().catch(() => undefined) }))
  }

  #note (what: string): void {
    this.#events.push(`${new Date().toISOString()} ${what}`)
  }

  #tick (): void {
    const processes = nodeProcesses(this.#ports)
    if (processes !== this.#processes) this.#note(`node processes went from ${this.#processes} to ${processes} (a node stopped or restarted)`)
    this.#processes = processes
    for (const node of this.#nodes) {
      if (node.channel !== undefined) {
        node.channel.publish('', SENTINEL_KEY, Buffer.from('x'))
        continue
      }
      // #connect catches its own failures: the promise never rejects.
      if (!node.connecting) this.#connect(node).catch(() => undefined)
    }
  }

  async #connect (node: Node): Promise<void> {
    node.connecting = true
    const host = new URL(node.url).host
    try {
      const connection = await connect(node.url)
      connection.on('error', () => undefined)
      connection.on('blocked', (reason: string) => this.#note(`${host} blocked publishers (${reason})`))
      connection.on('unblocked', () => this.#note(`${host} unblocked publishers`))
      connection.on('close', () => {
        node.connection = undefined
        node.channel = undefined
        this.#note(`${host} closed the watcher's connection`)
      })
      const channel = await connection.createChannel()
      channel.on('error', () => undefined)
      node.connection = connection
      node.channel = channel
    } catch {
      // Down for now: the next tick tries again.
    } finally {
      node.connecting = false
    }
  }
}
