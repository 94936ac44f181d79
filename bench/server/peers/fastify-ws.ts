// Fastify 5 with @fastify/websocket and nothing else: the floor under the
// plugin's memory per connection (the plugin adds its connection state to it).
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import type { Peer } from '../peer.js'

export async function start (): Promise<Peer> {
  const app = Fastify()
  await app.register(fastifyWebsocket)
  let connections = 0
  app.get('/', { websocket: true }, (socket) => {
    connections++
    socket.on('close', () => connections--)
  })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  return {
    port: Number(new URL(address).port),
    busy: () => false,
    stats: () => ({ connections }),
    close: () => app.close()
  }
}
