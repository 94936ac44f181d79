import { createServer, connect as tcpConnect, type Socket } from 'node:net'
import t from 'tap'
import { connectTarget } from '../lib/bus/amqp-nodes.js'
import { resolveOptions } from '../lib/options.js'
import { startAmqpProxy } from './helpers/amqp-proxy.js'
import { brokerOptions, brokerUrl, busMessage, rabbitmqctl, requireBroker, startBus } from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'

// Red-team attacks on `broker.url` as a list of nodes (lib/bus/amqp-nodes.ts):
// odd but valid URLs, duplicates, IPv6, encoded credentials, publishes across
// a failover. Long lists and TLS: attack-new-nodes-long-list; a node that
// never answers: attack-new-nodes-silent.

const DEAD = 'amqp://guest:guest@127.0.0.1:1'

t.test('a password with a bare % (valid for WHATWG URL and for amqplib\'s string form) is read as written, not thrown on', async (t) => {
  const url = 'amqp://guest:50%off@127.0.0.1:5672'
  t.doesNotThrow(() => resolveOptions({ broker: { url } }), 'register accepts it')
  // amqplib's string form read it with unescape(): '50%off'. connectTarget uses decodeURIComponent, which throws URIError.
  let target: ReturnType<typeof connectTarget> | undefined
  t.doesNotThrow(() => { target = connectTarget(url) }, 'connectTarget does not throw on it')
  t.equal(target?.password, '50%off', 'the password is what the string form would have read')
})

t.test('nodes on the real broker', async (t) => {
  if (!await requireBroker(t)) return

  t.test('odd but valid URLs: vhost %2F and //, heartbeat=0, frameMax=8192 (an event bigger than a frame), duplicates', async (t) => {
    const live = new URL(brokerUrl)
    const base = `amqp://guest:guest@${live.host}`
    for (const url of [`${base}/%2F`, `${base}//`, `${base}/?heartbeat=0&frameMax=8192`, [`${base}/%2F`, `${base}/%2F`, `${base}/%2F`]]) {
      const { bus, received } = await startBus(t, brokerOptions(t, { url }))
      await bus.bind('odd.*')
      const big = 'x'.repeat(40_000)
      await bus.publish(busMessage('odd.big', { big }))
      await waitFor(() => received.some((message) => message.topic === 'odd.big'), { what: `the 40 KB event through ${JSON.stringify(url)}`, timeoutMs: 5000 })
      t.equal(JSON.parse((received.find((message) => message.topic === 'odd.big')?.payload as Buffer).toString()).big.length, 40_000, `${JSON.stringify(url)}: intact`)
      await bus.close()
    }
  })

  t.test('a user whose name and password hold @ : % / and é, percent-encoded', async (t) => {
    const user = `evsock@at:k%${process.pid}`
    const password = 'p@ss:w%rd/é?#'
    await rabbitmqctl('add_user', user, password)
    t.teardown(() => rabbitmqctl('delete_user', user))
    await rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', '.*')
    const live = new URL(brokerUrl)
    const url = `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${live.host}/%2F`
    // A list: the clean-up's amqplib string form cannot log this user in (it unescapes é to mojibake); the machine's broker is tried after it.
    const { bus } = await startBus(t, brokerOptions(t, { url: [url] }))
    t.equal(bus.health().state, 'up')
  })

  t.test('IPv6 [::1] as a node', async (t) => {
    const live = new URL(brokerUrl)
    const open = new Set<Socket>()
    const server = createServer((client) => {
      const broker = tcpConnect({ host: live.hostname, port: Number(live.port || 5672) })
      open.add(client).add(broker)
      client.pipe(broker).pipe(client)
      const end = (): void => { client.destroy(); broker.destroy() }
      client.on('error', end).on('close', end)
      broker.on('error', end).on('close', end)
    })
    let port: number
    try {
      port = await new Promise<number>((resolve, reject) => {
        server.once('error', reject)
        server.listen(0, '::1', () => resolve((server.address() as { port: number }).port))
      })
    } catch (error) {
      t.plan(0, `no IPv6 loopback: ${(error as Error).message}`)
      return
    }
    t.teardown(() => new Promise<void>((resolve) => { server.close(() => resolve()); for (const socket of open) socket.destroy() }))
    const { bus } = await startBus(t, brokerOptions(t, { url: [DEAD, `amqp://guest:guest@[::1]:${port}`] }))
    t.equal(bus.health().state, 'up')
  })

  t.test('publishes during a failover: each resolves or rejects typed, and every resolved one is delivered', async (t) => {
    const proxies = [await startAmqpProxy(t), await startAmqpProxy(t)]
    const { bus, received } = await startBus(t, brokerOptions(t, { url: proxies.map((proxy) => proxy.url), publishTimeoutMs: 5000 }))
    await bus.bind('fail.*')
    const first = proxies.find((proxy) => proxy.roles().length === 2)
    t.ok(first, 'both connections on one node')
    const messages = Array.from({ length: 200 }, (_, i) => busMessage(`fail.${i}`))
    const settled: Array<Promise<PromiseSettledResult<void>>> = []
    for (const [i, message] of messages.entries()) {
      if (i === 50) {
        first!.refuse(true)
        first!.cutAll()
      }
      settled.push(bus.publish(message).then(() => ({ status: 'fulfilled', value: undefined }), (reason: unknown) => ({ status: 'rejected', reason })))
      if (i % 10 === 0) await new Promise((resolve) => setImmediate(resolve))
    }
    const results = await Promise.all(settled)
    const codes = new Map<string, number>()
    for (const result of results) {
      const code = result.status === 'fulfilled' ? 'ok' : String((result.reason as { code?: string }).code ?? (result.reason as Error).message)
      codes.set(code, (codes.get(code) ?? 0) + 1)
    }
    t.comment(`200 publishes across a failover: ${JSON.stringify(Object.fromEntries(codes))}`)
    for (const code of codes.keys()) t.match(code, /^(ok|FST_EVSOCK_)/, `outcome ${code} is ok or typed`)
    await bus.publish(busMessage('fail.sentinel'))
    await waitFor(() => received.some((message) => message.topic === 'fail.sentinel'), { what: 'the sentinel after the failover', timeoutMs: 10_000 })
    const got = new Set(received.map((message) => message.id))
    const lost = messages.filter((message, i) => results[i]?.status === 'fulfilled' && !got.has(message.id))
    t.equal(lost.length, 0, `resolved but never delivered: ${lost.map((message) => message.topic).join(', ')}`)
  })
})
