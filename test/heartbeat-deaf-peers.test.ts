import t from 'tap'
import { WebSocket } from 'ws'
import { openClient, startServer } from './helpers/server.js'
import { waitFor } from './helpers/wait.js'
import { clientFrame, rawWebSocket } from './helpers/raw-socket.js'

// A peer that stops reading cannot see our pings, but it can still write:
// unsolicited pongs (RFC 6455 allows them) must not count as answers, or such
// a peer is never found dead and holds its connection slot and buffers forever.

const PONG = 0xa

t.test('a peer that never reads but sends unsolicited pongs is terminated after the heartbeat', async (t) => {
  const heartbeatMs = 100
  const server = await startServer(t, { heartbeatMs, handshakesPerMinute: 0 })
  const answering = await openClient(t, server, { sub: 'reader' })
  const deaf = await rawWebSocket(server.port, '/events', { authorization: `Bearer ${server.sign({ sub: 'deaf' })}` })
  t.teardown(() => deaf.destroy())
  // rawWebSocket leaves the socket paused: it never reads the hello or any ping.
  let closed = false
  deaf.once('close', () => { closed = true })
  deaf.on('error', () => {})
  t.equal(server.app.eventSocket.stats().connections, 2)

  // Pongs faster than the heartbeat, empty and with guessed payloads.
  const guesses = [Buffer.alloc(0), Buffer.from([0, 0, 0, 0]), Buffer.from([0, 0, 0, 1]), Buffer.from([0, 0, 0, 2]), Buffer.from('ping')]
  let n = 0
  const ponging = setInterval(() => { if (!closed) deaf.write(clientFrame(guesses[n++ % guesses.length]!, PONG)) }, heartbeatMs / 4)
  t.teardown(() => clearInterval(ponging))
  // The bound is generous: answered pongs would keep the peer forever, and under the full suite a
  // busy machine once held this process (server and peer alike) past a bound of 30 heartbeats.
  await waitFor(() => server.app.eventSocket.stats().connections === 1, {
    what: 'the deaf peer to be terminated despite its pongs', timeoutMs: 10_000, detail: () => `${n} pongs sent`
  })
  clearInterval(ponging)
  t.ok(n > 0, `the deaf peer was terminated despite ${n} pongs`)

  // The answering client's echoed pongs are accepted: it outlives three more
  // heartbeats and still gets an event.
  const threePings = await new Promise<boolean>((resolve) => {
    let pings = 0
    const timer = setTimeout(() => resolve(false), 30 * heartbeatMs)
    answering.ws.on('ping', () => {
      if (++pings < 3) return
      clearTimeout(timer)
      resolve(true)
    })
  })
  t.ok(threePings, 'three more pings reached the answering client')
  t.equal(answering.ws.readyState, WebSocket.OPEN, 'a client answering the pings it reads stays')
  await answering.subscribe('user.reader.inbox')
  await server.app.publish('user.reader.inbox', 'sentinel')
  t.equal((await answering.next((m) => m.op === 'event')).data, 'sentinel')
})
