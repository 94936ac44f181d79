import { randomUUID } from 'node:crypto'
import t from 'tap'
import Fastify from 'fastify'
import eventSocket, { type EventSocketReadiness } from '../lib/index.js'
import { brokerOptions, privateVhost, rabbitmqctl, requireBroker } from './helpers/broker.js'
import { recordLogs } from './helpers/ops-logs.js'
import { attemptHandshake, SECRET, startServer, TestClient } from './helpers/server.js'
import { waitFor, within } from './helpers/wait.js'

// No secret in any log line under the operations attacks: the broker URL's
// password (a user of this test's own, with a password no other string
// holds) through a broker that refuses it, an outage, readiness storms,
// scrapes and a close; and the tokens of hostile handshakes. Nor in what
// readiness, the metrics or a failed registration tell the app.

t.test('no password and no token in any log line, readiness reason, metrics text or error, through an outage, refused logins and hostile handshakes', async (t) => {
  if (!await requireBroker(t)) return
  const base = new URL(await privateVhost(t))
  const vhost = decodeURIComponent(base.pathname.slice(1))
  const user = `evsock-attack-ops-${randomUUID()}`
  const password = `pw@${randomUUID()}:s3cret`
  const wrong = `wrong@${randomUUID()}`
  await rabbitmqctl('add_user', user, password)
  t.teardown(() => rabbitmqctl('delete_user', user))
  await rabbitmqctl('set_permissions', '-p', vhost, user, '.*', '.*', '.*')
  const url = new URL(base)
  url.username = encodeURIComponent(user)
  url.password = encodeURIComponent(password)

  const logs = recordLogs('trace')
  const told: string[] = []
  const server = await startServer(t, { metrics: true, allowQueryToken: true, probeTimeoutMs: 1000, broker: brokerOptions(t, { url: url.toString() }) }, undefined, logs.logger)
  const ready = async (): Promise<EventSocketReadiness> => {
    const results = await Promise.all(Array.from({ length: 100 }, () => server.app.eventSocket.health({ probe: true })))
    told.push(...results.map((result) => JSON.stringify(result)))
    return results[0] as EventSocketReadiness
  }
  t.equal((await ready()).status, 'ok', 'ready at first')

  // Hostile handshakes, and a client re-authenticating with a forged token.
  const tokens = [server.sign({ sub: 'victim', role: 'admin' }), server.sign({ sub: 'victim' }, { expiresIn: -10 }), `${server.sign({ sub: 'x' }).slice(0, -4)}AAAA`, `not-a-jwt-${randomUUID()}`]
  for (const token of tokens) {
    await attemptHandshake(`${server.url}?access_token=${encodeURIComponent(token)}&junk=1`, { headers: { origin: 'http://evil.example' }, protocols: ['nope'] })
    await attemptHandshake(server.url, { headers: { authorization: `Bearer ${token}x` } })
    await attemptHandshake(server.url, { protocols: ['evsock.v1.json', `bearer.${token}y`] })
  }
  const client = new TestClient(server.url, { token: tokens[0] })
  t.teardown(() => client.ws.terminate())
  await client.next((message) => message.op === 'hello')
  client.send({ op: 'auth', id: 1, token: tokens[2] })
  await client.next((message) => message.id === 1)

  // The broker refuses the password from now on, and drops the bus's connections.
  await rabbitmqctl('change_password', user, wrong)
  await rabbitmqctl('close_all_connections', '--vhost', vhost, 'evsock attack-ops logs test')
  await waitFor(() => server.app.eventSocket.health().broker.state !== 'up', { what: 'the bus to see the outage' })
  await waitFor(() => logs.lines.some((line) => line.includes('ACCESS_REFUSED') || line.includes('ACCESS-REFUSED')), { what: 'a reconnect refused for its password', timeoutMs: 15_000 })
  const down = await ready()
  t.equal(down.status, 'down', 'down while the broker refuses the login')
  const publishes = [1, 2].map((n) => server.app.publish('outage.x', { n }).catch((err: Error) => { told.push(err.message) }))
  told.push(...await Promise.all(Array.from({ length: 50 }, () => server.app.eventSocket.metrics())))

  await rabbitmqctl('change_password', user, password)
  await waitFor(async () => (await ready()).status === 'ok', { what: 'readiness after the password is back', timeoutMs: 20_000, intervalMs: 200 })
  await within(Promise.all(publishes), { what: 'the publishes of the outage', timeoutMs: 15_000 })
  const closing = server.app.close()
  const last = ready()
  await within(closing, { what: 'app.close()' })
  await last

  // A registration refused by the broker: its error and its logs.
  const refused = new URL(url)
  refused.password = encodeURIComponent(wrong)
  const failing = Fastify({ logger: logs.logger })
  failing.register(eventSocket, { jwt: { secret: SECRET }, broker: { ...brokerOptions(t), url: refused.toString(), publishTimeoutMs: 1000 } })
  await failing.ready().then(() => t.fail('registered with a wrong password'), (err: Error) => { told.push(err.message) })
  await failing.close().catch(() => {})

  t.ok(logs.lines.length > 20, `${logs.lines.length} log lines were written`)
  t.ok(logs.lines.some((line) => line.includes(encodeURIComponent(user)) && line.includes('***')), 'some name the broker\'s URL, its user and no password')
  const secrets = [password, encodeURIComponent(password), wrong, encodeURIComponent(wrong), ...tokens]
  for (const [what, texts] of [['log line', logs.lines], ['readiness, metrics text or error', told]] as const) {
    const leaks = texts.filter((text) => secrets.some((secret) => text.includes(secret)))
    t.same(leaks, [], `no ${what} holds a password or a token`)
  }
  t.ok(told.some((text) => /ACCESS.REFUSED|broker (down|connecting)/.test(text)), 'what the app was told names the failure all the same')
})
