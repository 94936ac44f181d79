import type { Channel, ChannelModel, RecoveringChannelModel } from 'amqplib'
import type { NodeRotation } from './amqp-nodes.js'

// The RabbitMQ bus's two connections (publisher, consumer) as amqp.ts tracks them across reconnects.

export type Role = 'publisher' | 'consumer'
export type SideState = 'connecting' | 'up' | 'down'

/** One live connection of one side, and the channels whose loss drops it. */
export interface Session {
  model: ChannelModel
  channels: Channel[]
  consumerTag: string | undefined
  lost: boolean
}

/** One of the two connections, across its reconnects. */
export interface Side {
  role: Role
  state: SideState
  connection: RecoveringChannelModel | undefined
  /** The node each attempt of this connection dials. */
  nodes: NodeRotation | undefined
  session: Session | undefined
}

/** The URL without its password, for logs and errors. */
export function redact (url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return 'the broker'
  }
}

/** The vhost the URL names ('/' when it names none), as the broker knows it; of a node list, its first node's (they share one). */
export function vhostOf (url: string | readonly string[]): string {
  try {
    const vhost = decodeURIComponent(new URL(typeof url === 'string' ? url : url[0] ?? '').pathname.slice(1))
    return vhost === '' ? '/' : vhost
  } catch {
    return '/'
  }
}
