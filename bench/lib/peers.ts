// The servers under test, by the name the results use.
import { AMQP_URL, CLUSTER_URLS, portOf } from './config.js'
import type { Proto } from '../gen/conn.js'
import type { PeerOptions } from '../server/peer.js'
import type { PeerModule } from '../server/main.js'

export interface PeerSpec {
  module: PeerModule
  /** What the generators speak to it. */
  proto: Proto
  /** Server processes; with more than one, instance 0 publishes and connections are spread round-robin. */
  instances: number
  options: Omit<PeerOptions, 'instance'>
}

export const PEERS = {
  'ws-naive': { module: 'ws', proto: 'ws', instances: 1, options: { mode: 'naive' } },
  'ws-coalesced': { module: 'ws', proto: 'ws', instances: 1, options: { mode: 'coalesced' } },
  'fastify-ws': { module: 'fastify-ws', proto: 'ws', instances: 1, options: {} },
  'socket.io': { module: 'socketio', proto: 'sio', instances: 1, options: {} },
  'socket.io-redis': { module: 'socketio', proto: 'sio', instances: 1, options: { shared: true } },
  'socket.io-redis-x2': { module: 'socketio', proto: 'sio', instances: 2, options: { shared: true } },
  'evsock-memory': { module: 'evsock', proto: 'evsock', instances: 1, options: {} },
  'evsock-amqp': { module: 'evsock', proto: 'evsock', instances: 1, options: { shared: true } },
  'evsock-amqp-x2': { module: 'evsock', proto: 'evsock', instances: 2, options: { shared: true } },
  /** Like evsock-amqp-x2, on the three-node cluster: each instance on a node of its own, quorum instance queues. */
  'evsock-cluster-x2': { module: 'evsock', proto: 'evsock', instances: 2, options: { shared: true, cluster: true } }
} as const satisfies Record<string, PeerSpec>

export type PeerName = keyof typeof PEERS

/** The AMQP ports of the RabbitMQ nodes a peer uses (bench/lib/broker-cpu.ts reads their CPU). */
export function brokerPortsOf (name: PeerName): number[] {
  const options: PeerSpec['options'] = PEERS[name].options
  return (options.cluster === true ? CLUSTER_URLS : [AMQP_URL]).map(portOf)
}

export function peerNames (list: string): PeerName[] {
  return list.split(',').map((name) => {
    if (!(name in PEERS)) throw new Error(`unknown peer ${name}; known: ${Object.keys(PEERS).join(', ')}`)
    return name as PeerName
  })
}
