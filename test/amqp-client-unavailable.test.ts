import t from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { connect } from '../lib/client/index.js'

// The bundled client and the UNAVAILABLE answer to a `sub` (the server's
// broker could not bind it in time): `ready` rejects with a typed error, and
// the client asks again later instead of dropping the pattern. A plain `ws`
// server plays the server's part, answering the first `sub` UNAVAILABLE.

t.test('a sub answered UNAVAILABLE: ready rejects with the serverCode, and the sub is sent again until ok', async (t) => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  t.teardown(() => new Promise<void>((resolve) => { server.close(() => resolve()) }))
  const subs: number[] = []
  let answered: () => void = () => {}
  const accepted = new Promise<void>((resolve) => { answered = resolve })
  server.on('connection', (socket) => {
    socket.send(JSON.stringify({ op: 'hello', v: 1, session: 's', user: 'u', window: 64, maxMessageBytes: 16384, heartbeatMs: 30000, expiresAt: null }))
    socket.on('message', (data: Buffer) => {
      const message = JSON.parse(data.toString()) as { op: string, id: number }
      if (message.op !== 'sub') return
      subs.push(message.id)
      if (subs.length === 1) socket.send(JSON.stringify({ op: 'error', id: message.id, code: 'UNAVAILABLE', message: 'broker away' }))
      else {
        socket.send(JSON.stringify({ op: 'ok', id: message.id }))
        answered()
      }
    })
  })
  await new Promise((resolve) => server.once('listening', resolve))
  const { port } = server.address() as { port: number }
  const client = connect({ url: `ws://127.0.0.1:${port}/events`, token: 'x', WebSocket, reconnect: { initialDelayMs: 50, maxDelayMs: 200 } })
  client.on('error', () => {})
  t.teardown(() => client.close())
  const subscription = client.subscribe('orders.*', () => {})
  await t.rejects(subscription.ready, { code: 'EVSOCK_REQUEST_FAILED', serverCode: 'UNAVAILABLE', pattern: 'orders.*' }, 'ready rejects with the typed error')
  let timer: NodeJS.Timeout | undefined
  await Promise.race([accepted, new Promise((resolve, reject) => { timer = setTimeout(() => reject(new Error(`no second sub within 5 s (subs: ${subs.length})`)), 5000) })])
  clearTimeout(timer)
  t.equal(subs.length, 2, 'the sub was sent again, once, and accepted')
  await client.subscribe('orders.*', () => {}).ready
  t.pass('a later subscriber of the pattern gets a ready that resolved')
})
