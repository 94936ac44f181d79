import { createServer, connect, type Server, type Socket } from 'node:net'
import { once } from 'node:events'

// A TCP proxy in front of the instances, standing in for a load balancer: the
// clients connect to it, and the faults happen in it (every connection cut
// without a close frame) or behind it (the upstream switched to another
// instance, as a balancer does when one goes away).

export interface TcpProxy {
  readonly port: number
  /** ws:// URL of the plugin's route through the proxy. */
  readonly url: string
  /** Connections accepted so far, cut or not. */
  readonly accepted: number
  /** Pairs open now. */
  readonly open: number
  /** Where new connections go from now on; connections already open stay where they are. */
  setUpstream: (port: number) => void
  /** While true, every new connection is destroyed at once (an instance unreachable): the client keeps failing to reconnect. */
  refuse: (refusing: boolean) => void
  /** Destroys every open connection on both sides (no close frame, no FIN handshake): the client sees 1006. Returns how many. */
  cutAll: () => number
  close: () => Promise<void>
}

/** Starts a proxy to `127.0.0.1:upstream`; closed when the test ends. */
export async function startTcpProxy (t: { teardown: (fn: () => Promise<void>) => void }, upstream: number, path = '/events'): Promise<TcpProxy> {
  let target = upstream
  let accepted = 0
  let refusing = false
  const pairs = new Set<[Socket, Socket]>()
  const server: Server = createServer((client) => {
    accepted++
    if (refusing) {
      client.destroy()
      return
    }
    const backend = connect({ host: '127.0.0.1', port: target })
    const pair: [Socket, Socket] = [client, backend]
    pairs.add(pair)
    // An error or a close on either side ends both: a half-open pair would
    // leave the client waiting on an instance that is gone.
    const end = (): void => {
      if (!pairs.delete(pair)) return
      client.destroy()
      backend.destroy()
    }
    for (const socket of pair) {
      socket.setNoDelay(true)
      socket.on('error', end)
      socket.on('close', end)
    }
    client.pipe(backend)
    backend.pipe(client)
  })
  const cutAll = (): number => {
    const cut = pairs.size
    for (const [client, backend] of [...pairs]) {
      client.destroy()
      backend.destroy()
    }
    pairs.clear()
    return cut
  }
  const { port, close } = await listenUntilTeardown(t, server, cutAll)
  return {
    port,
    url: `ws://127.0.0.1:${port}${path}`,
    get accepted () { return accepted },
    get open () { return pairs.size },
    setUpstream: (port) => { target = port },
    refuse: (refuse) => { refusing = refuse },
    cutAll,
    close
  }
}

/**
 * Listens on a free port of 127.0.0.1 and returns it with `close`, which
 * stops the server and runs `cutAll` on its open connections; idempotent, and
 * run when the test ends.
 */
export async function listenUntilTeardown (t: { teardown: (fn: () => Promise<void>) => void }, server: Server, cutAll: () => void): Promise<{ port: number, close: () => Promise<void> }> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('the proxy has no port')
  let closed: Promise<void> | undefined
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      server.close(() => resolve())
      cutAll()
    })
    return closed
  }
  t.teardown(close)
  return { port: address.port, close }
}
