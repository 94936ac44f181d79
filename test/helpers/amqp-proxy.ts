import { createServer, connect, type Socket } from 'node:net'
import { brokerUrl } from './broker.js'
import { listenUntilTeardown } from './tcp-proxy.js'

// A TCP proxy between the amqp bus and RabbitMQ that can stall one of the
// bus's two connections: what the broker sends it is held (not lost, not
// cut) until the stall ends, as a hung consumer or a half-dead connection
// would leave it. The connections stay open, so the bus still reports 'up':
// exactly the failure only a readiness probe that proves delivery sees.

export type AmqpRole = 'consumer' | 'publisher'

export interface AmqpProxy {
  /** The broker URL through the proxy (same credentials and vhost). */
  readonly url: string
  /** Holds (true) or releases (false) what the broker sends to the bus's `role` connection. */
  stall: (role: AmqpRole, stalled: boolean) => void
  /** The roles of the connections open now, as their names told them. */
  roles: () => AmqpRole[]
  /** While true, every new connection is destroyed at once: the broker is unreachable. */
  refuse: (refusing: boolean) => void
  /** Destroys every open connection (no AMQP close): the bus sees its connections drop. */
  cutAll: () => void
  close: () => Promise<void>
}

interface Pair { client: Socket, broker: Socket, role: AmqpRole | undefined, held: Buffer[] }

/** The bus names its connections `fastify-event-socket <role> <queue>` (amqp.ts); the name travels in the clear in Start-Ok. */
const ROLE = /fastify-event-socket (consumer|publisher)/

/** Starts a proxy to the tests' broker; closed when the test ends. */
export async function startAmqpProxy (t: { teardown: (fn: () => Promise<void>) => void }): Promise<AmqpProxy> {
  const target = new URL(brokerUrl)
  const stalled = new Set<AmqpRole>()
  const pairs = new Set<Pair>()
  let refusing = false
  const server = createServer((client) => {
    if (refusing) {
      client.destroy()
      return
    }
    const broker = connect({ host: target.hostname, port: Number(target.port || 5672) })
    const pair: Pair = { client, broker, role: undefined, held: [] }
    pairs.add(pair)
    let opening = ''
    client.on('data', (chunk: Buffer) => {
      if (pair.role === undefined && opening.length < 8192) {
        opening += chunk.toString('latin1')
        pair.role = ROLE.exec(opening)?.[1] as AmqpRole | undefined
      }
      broker.write(chunk)
    })
    broker.on('data', (chunk: Buffer) => {
      if (pair.role !== undefined && stalled.has(pair.role)) pair.held.push(chunk)
      else client.write(chunk)
    })
    const end = (): void => {
      if (!pairs.delete(pair)) return
      client.destroy()
      broker.destroy()
    }
    for (const socket of [client, broker]) {
      socket.setNoDelay(true)
      socket.on('error', end)
      socket.on('close', end)
    }
  })
  const cutAll = (): void => {
    for (const pair of [...pairs]) {
      pair.client.destroy()
      pair.broker.destroy()
    }
  }
  const { port, close } = await listenUntilTeardown(t, server, cutAll)
  const url = new URL(brokerUrl)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  return {
    url: url.toString(),
    stall: (role, stall) => {
      if (stall) {
        stalled.add(role)
        return
      }
      stalled.delete(role)
      for (const pair of pairs) {
        if (pair.role !== role) continue
        for (const chunk of pair.held.splice(0)) pair.client.write(chunk)
      }
    },
    roles: () => [...pairs].flatMap((pair) => pair.role === undefined ? [] : [pair.role]),
    refuse: (refuse) => { refusing = refuse },
    cutAll,
    close
  }
}
