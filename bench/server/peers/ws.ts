// Bare `ws`, the ceilings: every event framed once, then either one write per
// socket per event ('naive') or the frames of a tick written together per
// socket ('coalesced'). Every socket gets every event; no seq, no window.
import { createServer } from 'node:http'
import type { Socket } from 'node:net'
import { WebSocketServer } from 'ws'
import { OP_TEXT, frame } from '../../lib/frames.js'
import { FanoutTimer } from '../fanout-timer.js'
import { backlogged, listen, trackSockets, type Peer, type PeerOptions } from '../peer.js'
import type { EventData } from '../../lib/payload.js'

export async function start (options: PeerOptions): Promise<Peer> {
  const server = createServer()
  const sockets = trackSockets(server)
  const wss = new WebSocketServer({ server, perMessageDeflate: options.compression === true })
  // The upgraded TCP sockets; written directly, as nothing else writes to them during a run.
  const open = new Set<Socket>()
  wss.on('connection', (ws, request) => {
    open.add(request.socket)
    ws.on('close', () => open.delete(request.socket))
  })

  const encode = (data: EventData): Buffer => frame(OP_TEXT, Buffer.from(JSON.stringify(data)), false)
  let tick: Buffer[] = []
  const flush = (): void => {
    const frames = tick
    tick = []
    for (const socket of open) {
      socket.cork()
      for (const bytes of frames) socket.write(bytes)
      socket.uncork()
    }
  }
  const publish = options.mode === 'coalesced'
    ? (_topic: string, data: EventData) => {
        if (tick.push(encode(data)) === 1) process.nextTick(flush)
      }
    : (_topic: string, data: EventData) => {
        const bytes = encode(data)
        for (const socket of open) socket.write(bytes)
      }
  // Timed as the plugin times itself: from the event's arrival (here the
  // publish call) to the end of the writes, framing included. Naive mode
  // only, where the writes end inside the call.
  const fanout = options.timeFanout === true && options.mode !== 'coalesced' ? new FanoutTimer() : undefined
  const timed = fanout === undefined
    ? publish
    : (topic: string, data: EventData) => {
        const started = performance.now()
        publish(topic, data)
        fanout.record(performance.now() - started)
      }

  return {
    port: await listen(server),
    publish: timed,
    ...(fanout === undefined ? {} : { fanout }),
    busy: () => backlogged(sockets),
    stats: () => ({ connections: open.size }),
    close: async () => {
      for (const ws of wss.clients) ws.terminate()
      await new Promise((resolve) => server.close(resolve))
    }
  }
}
