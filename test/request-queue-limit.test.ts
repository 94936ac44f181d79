import t from 'tap'
import { delay, openClient, startServer } from './helpers/server.js'

// Requests run one after another (docs/protocol.md section 2). Behind a slow
// async `authorize` a client could otherwise queue requests without bound
// while staying within its rate budget: the queue is capped at rateBurst waiting.

t.test('requests past rateBurst waiting behind a slow authorize are refused at once with RATE_LIMITED', async (t) => {
  let open!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  let authorizeCalls = 0
  const rateBurst = 30
  const server = await startServer(t, {
    rateBurst,
    rateLimit: 1000,
    authorize: async () => {
      authorizeCalls++
      await gate
      return true
    }
  })
  const client = await openClient(t, server, { sub: 'u1', role: 'user' })
  // Batches of 20, each after the bucket refilled: within the rate budget throughout.
  const total = 200
  for (let id = 1; id <= total; id++) {
    client.send({ op: 'sub', id, topic: `user.u1.t${id}` })
    if (id % 20 === 0) await delay(40)
  }
  t.equal(client.ws.readyState, client.ws.OPEN, 'the client stayed within its rate budget')

  // The last one is answered while the first still waits for authorize.
  const last = await client.next((m) => m.id === total, { timeout: 3000 }).catch((err: Error) => err)
  t.notOk(last instanceof Error, `the excess is answered without waiting for authorize${last instanceof Error ? `: ${last.message.slice(0, 80)}` : ''}`)
  const refused = client.messages.filter((m) => m.op === 'error' && m.code === 'RATE_LIMITED')
  t.equal(refused.length, total - 1 - rateBurst, 'one in hand and rateBurst waiting; the rest refused')
  t.same(refused.map((m) => m.id), Array.from({ length: refused.length }, (_, i) => i + 2 + rateBurst), 'the newest are refused')
  t.equal(authorizeCalls, 1, 'authorize still holds the first')

  open()
  const kept = await Promise.all(Array.from({ length: rateBurst + 1 }, (_, i) => client.next((m) => m.id === i + 1)))
  t.ok(kept.every((m) => m.op === 'ok'), 'the queued ones are handled')

  // The connection stays usable: refusals are not bad frames.
  await server.app.publish('user.u1.t1', 'sentinel')
  t.equal((await client.next((m) => m.op === 'event')).data, 'sentinel')
  t.equal((await client.subscribe('user.u1.t1', 9999)).op, 'ok', 'once the queue drained requests are accepted again')
})
