import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import type { ResolvedBrokerOptions } from '../lib/options.js'
import { brokerOptions, requireBroker, withChannel, type LogEntry } from './helpers/broker.js'
import { attemptHandshake, openClient, startServer, type TestClient, type TestServer } from './helpers/server.js'

// revoke(sub) on one instance holds on every instance sharing the exchange:
// the control message on `$evsock.revoke` (docs/security.md, "Revocation").

const bearer = (token: string): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${token}` } })

/** An instance whose log lines (warn and up) are kept. */
async function loggedServer (t: Test, broker: ResolvedBrokerOptions): Promise<{ server: TestServer, entries: LogEntry[] }> {
  const entries: LogEntry[] = []
  const stream = { write: (line: string) => { entries.push(JSON.parse(line)) } }
  return { entries, server: await startServer(t, { broker }, undefined, { level: 'warn', stream }) }
}

/** An admin holding `#`: sees every event, and must never see a control message. */
async function watcher (t: Test, server: TestServer): Promise<TestClient> {
  const client = await openClient(t, server, { sub: 'watcher', role: 'admin' })
  client.ackEach()
  t.equal((await client.subscribe('#')).op, 'ok', 'subscribed to #')
  return client
}

/** Publishes a sentinel and waits for every watcher to get it: whatever was delivered before it has arrived by then. */
async function sentinel (t: Test, server: TestServer, watchers: TestClient[]): Promise<void> {
  const { id } = await server.app.publish('sentinel.done', { n: randomUUID() })
  for (const client of watchers) await client.next((m) => m.op === 'event' && m.id === id, { timeout: 10_000 })
  for (const [i, client] of watchers.entries()) {
    t.same(client.events().map((event) => event.topic), ['sentinel.done'], `watcher ${i} saw only the sentinel, no control message`)
  }
}

if (await requireBroker(t)) {
  t.test('revoke on A closes the sub\'s socket on B with 4001, B refuses the old token, and # never sees the control message', async (t) => {
    const broker = brokerOptions(t)
    const [a, b] = await Promise.all([startServer(t, { broker }), startServer(t, { broker })])
    const watchers = [await watcher(t, a), await watcher(t, b)]
    const old = a.sign({ sub: 'mallory', role: 'user' })
    const onB = await openClient(t, b, { token: old })

    t.equal(await a.app.eventSocket.revoke('mallory'), 0, 'A had no socket of mallory')
    t.same(await Promise.race([
      onB.closed,
      new Promise((resolve) => setTimeout(() => resolve('B\'s socket still open after 10 s'), 10_000).unref())
    ]), { code: 4001, reason: 'token revoked' }, 'B closed mallory\'s socket')

    const refusal = await attemptHandshake(b.url, bearer(old))
    t.equal(refusal.status, 401, 'B refuses the old token')
    t.equal(refusal.body.code, 'FST_EVSOCK_TOKEN_REVOKED')
    t.equal((await attemptHandshake(a.url, bearer(old))).body.code, 'FST_EVSOCK_TOKEN_REVOKED', 'and so does A')
    const fresh = b.sign({ sub: 'mallory', role: 'user', iat: Math.floor(Date.now() / 1000) + 1 })
    t.equal((await attemptHandshake(b.url, bearer(fresh))).status, 101, 'a token issued after is admitted on B')

    await sentinel(t, a, watchers)
    t.equal(b.app.eventSocket.stats().eventsIn, 1, 'the control message is not counted as an event')
  })

  t.test('a malformed control message from a foreign producer is dropped with a warning and revokes nothing', async (t) => {
    const broker = brokerOptions(t)
    const { server, entries } = await loggedServer(t, broker)
    const watchers = [await watcher(t, server)]
    const token = server.sign({ sub: 'mallory', role: 'user' })
    const client = await openClient(t, server, { token })
    const bad = [
      'not json',
      JSON.stringify({ sub: 'mallory' }),
      JSON.stringify({ sub: '', at: Date.now() }),
      JSON.stringify({ sub: 'mallory', at: Date.now() + 3_600_000 }),
      JSON.stringify([1, 2])
    ]
    await withChannel(broker.url as string, async (channel) => {
      for (const payload of bad) {
        channel.publish(broker.exchange, '$evsock.revoke', Buffer.from(payload), { messageId: randomUUID(), timestamp: Date.now() })
      }
      channel.publish(broker.exchange, '$evsock.nonsense', Buffer.from('{}'), { messageId: randomUUID() })
      // A round trip on the same channel: the publishes are in before the connection closes.
      await channel.checkExchange(broker.exchange)
    })
    // Queued behind the bad messages on the instance's queue: once it arrives, they were all handled.
    await sentinel(t, server, watchers)
    // Summarised, so that a flood of them cannot flood the log: the first is logged, the rest counted.
    t.equal(entries.filter((entry) => /control message/.test(entry.msg)).length, 1, 'one warning for the burst of bad control messages')
    t.equal(client.ws.readyState, client.ws.OPEN, 'mallory\'s socket stays open')
    t.equal((await attemptHandshake(server.url, bearer(token))).status, 101, 'and the token is still admitted')
  })
}
