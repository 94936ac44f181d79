import { createServer, type Socket } from 'node:net'
import t from 'tap'
import { brokerOptions, brokerUrl, requireBroker, startBus } from './helpers/broker.js'
import { listenUntilTeardown } from './helpers/tcp-proxy.js'

// Red-team attack on `broker.url` as a list of nodes: the first node takes
// TCP and never answers AMQP (a silent peer). amqplib gives up on it after
// the bus's CONNECT_TIMEOUT_MS (5 s, an idle timeout), then fails over.

type Teardown = { teardown: (fn: () => Promise<void> | void) => void }

/** A TCP server that reads everything and never writes: a node that accepts connections and never answers AMQP. */
async function silentPeer (t: Teardown): Promise<string> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('data', () => {})
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  const { port } = await listenUntilTeardown(t, server, () => { for (const socket of sockets) socket.destroy() })
  return `amqp://guest:guest@127.0.0.1:${port}`
}

/** How a start ended and when: `up 5063 ms`, or the error's code and the time. */
async function startOutcome (t: Parameters<typeof startBus>[0], url: readonly string[], publishTimeoutMs?: number): Promise<string> {
  const began = Date.now()
  const ended = await startBus(t, brokerOptions(t, { url, ...(publishTimeoutMs === undefined ? {} : { publishTimeoutMs }) }))
    .then(() => 'up', (error: { code?: string }) => error.code ?? String(error))
  return `${ended} ${Date.now() - began} ms`
}

t.test('a silent node on the real broker', async (t) => {
  if (!await requireBroker(t)) return

  t.test('a silent first node (TCP accepted, no AMQP answer): failover to the live node, within what time', async (t) => {
    const silent = await silentPeer(t)
    const times: string[] = []
    for (let i = 0; i < 3; i++) {
      times.push(await startOutcome(t, [silent, brokerUrl]))
      t.match(times.at(-1), /^up /, `start ${i} came up (${times.at(-1) as string})`)
    }
    t.comment(`[silent, live], default publishTimeoutMs (start bound 8 s): ${times.join('; ')}`)
  })

  t.test('a silent first node with publishTimeoutMs 3000: start still reaches the live second node', async (t) => {
    const silent = await silentPeer(t)
    const times: string[] = []
    for (let i = 0; i < 5; i++) {
      times.push(await startOutcome(t, [silent, brokerUrl], 3000))
    }
    t.comment(`[silent, live], publishTimeoutMs 3000: ${times.join('; ')}`)
    t.ok(times.every((time) => time.startsWith('up')), `every start came up (${times.join('; ')})`)
  })
})
