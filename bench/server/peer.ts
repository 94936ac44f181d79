// What every server under test offers the driver in bench/server/main.ts.
import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { EventData } from '../lib/payload.js'
import type { FanoutTimer } from './fanout-timer.js'

export interface PeerOptions {
  /** Index of this instance; instance 0 publishes. */
  instance: number
  /** ws: one write per frame per socket ('naive') or the frames of a tick corked together ('coalesced'). */
  mode?: 'naive' | 'coalesced'
  /** Socket.IO: the Redis adapter; evsock: the RabbitMQ bus. Otherwise in-memory. */
  shared?: boolean
  /** evsock: the ack window. */
  window?: number
  /** evsock: events waiting behind a full window per connection before 4008 (the plugin's default otherwise). */
  maxPending?: number
  /** permessage-deflate offered to clients. */
  compression?: boolean
  /** evsock: the `history` option. */
  history?: boolean | { maxReplays?: number }
  /**
   * evsock with `shared`: the local three-node cluster (CLUSTER_URLS) instead
   * of the single node, instance i on node i, with quorum instance queues.
   */
  cluster?: boolean
  /** evsock with `shared`: the exchange, instead of the bench's own (history runs use one each, then delete it). */
  exchange?: string
  /** evsock and bare ws: time each event's fan-out inside the server (evsock: through its `metrics` option). */
  timeFanout?: boolean
}

export interface Peer {
  port: number
  /** Sends one event to the subscribers of `topic` (memory-only peers have none). */
  publish?: (topic: string, data: EventData) => void
  /** True while the server has more queued than it should take more on: the driver waits. */
  busy: () => boolean
  /**
   * Events this instance published that have not come back to it off the bus
   * yet (undefined: none of its own are in transit). The driver bounds it in
   * a fan-out to one topic every instance holds, so that a broker's backlog
   * cannot land on the sockets at once.
   */
  inTransit?: () => number
  /** Counters worth reporting (broker messages consumed, closes, pending). */
  stats: () => Record<string, number>
  /** With `timeFanout`: each event's fan-out time inside the server. */
  fanout?: FanoutTimer
  /** Resolves once every publish so far has been taken by the bus (RabbitMQ: confirmed). */
  settled?: () => Promise<void>
  close: () => Promise<void>
}

/** Bytes a socket may hold in user space before the driver backs off. */
const BACKLOG_LIMIT = 256 * 1024

/** The TCP sockets of `server`, to watch the write backlog that a peer without flow control builds up. */
export function trackSockets (server: Server): Set<Socket> {
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  return sockets
}

export function backlogged (sockets: Iterable<Socket>): boolean {
  for (const socket of sockets) {
    if (socket.writableLength > BACKLOG_LIMIT) return true
  }
  return false
}

export async function listen (server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}
