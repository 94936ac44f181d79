// Socket.IO 4.8 as people deploy it for this job: WebSocket transport, a JWT
// auth middleware (fast-jwt, the verifier @fastify/jwt uses, so both sides
// pay the same for verification), rooms, and for several instances the
// Redis adapter, where every instance receives every event.
import { createServer } from 'node:http'
import { Server } from 'socket.io'
import { createAdapter } from '@socket.io/redis-adapter'
import { createClient } from 'redis'
import { createVerifier } from 'fast-jwt'
import { BENCH_REDIS_KEY, REDIS_URL, SECRET } from '../../lib/config.js'
import { backlogged, listen, trackSockets, type Peer, type PeerOptions } from '../peer.js'

export async function start (options: PeerOptions): Promise<Peer> {
  const server = createServer()
  const sockets = trackSockets(server)
  const io = new Server(server, {
    transports: ['websocket'],
    serveClient: false,
    perMessageDeflate: options.compression === true,
    // Its heartbeat out of the way of the measurements.
    pingInterval: 3_600_000,
    pingTimeout: 3_600_000
  })

  let consumed = 0
  const redis = options.shared === true ? createClient({ url: REDIS_URL }) : undefined
  const subscriber = redis?.duplicate()
  if (redis !== undefined && subscriber !== undefined) {
    await Promise.all([redis.connect(), subscriber.connect()])
    io.adapter(createAdapter(redis, subscriber, { key: BENCH_REDIS_KEY }))
    // Count what this instance takes off Redis: the adapter calls onmessage for every broadcast.
    const adapter = io.of('/').adapter as unknown as { onmessage: (...args: unknown[]) => unknown }
    const onmessage = adapter.onmessage.bind(adapter)
    adapter.onmessage = (...args) => {
      consumed++
      return onmessage(...args)
    }
  }

  const verify = createVerifier({ key: SECRET })
  io.use((socket, next) => {
    try {
      socket.data.user = verify(String(socket.handshake.auth.token))
      next()
    } catch (err) {
      next(err as Error)
    }
  })
  io.on('connection', (socket) => {
    const room: unknown = socket.handshake.auth.room
    if (typeof room === 'string') socket.join(room)
  })

  return {
    port: await listen(server),
    publish: (topic, data) => { io.to(topic).emit('ev', data) },
    busy: () => backlogged(sockets),
    stats: () => ({ connections: io.engine.clientsCount, consumed }),
    close: async () => {
      await io.close()
      await Promise.all([redis?.quit(), subscriber?.quit()])
    }
  }
}
