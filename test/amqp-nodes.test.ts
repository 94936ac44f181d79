import t from 'tap'
import { connect } from 'amqplib'
import { connectTarget, NodeRotation } from '../lib/bus/amqp-nodes.js'
import { vhostOf } from '../lib/bus/amqp-session.js'
import { resolveOptions } from '../lib/options.js'
import { startAmqpProxy, type AmqpProxy } from './helpers/amqp-proxy.js'
import { brokerOptions, brokerUrl, busMessage, privateVhost, rabbitmqctl, requireBroker, startBus, withChannel } from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'

// `broker.url` as a list of a cluster's nodes: each connection starts at its
// instance's node and, when that node goes, reconnects to the next. Here the
// "nodes" are TCP proxies in front of the machine's one broker, so that a node
// can be made to vanish without a cluster; the cluster's own fault tests run
// on three real nodes (test/cluster-*.test.ts).

const DEAD_NODE = 'amqp://guest:guest@127.0.0.1:1'

t.test('a node URL becomes the object amqplib dials, as its string form would have read it', async (t) => {
  t.same(connectTarget('amqps://us%40r:p%3Ass@rabbit-2.internal:5671/%2Fprod?heartbeat=10&frameMax=8192&locale=en_US'), {
    protocol: 'amqps',
    hostname: 'rabbit-2.internal',
    port: 5671,
    username: 'us@r',
    password: 'p:ss',
    vhost: '%2Fprod',
    locale: 'en_US',
    heartbeat: 10,
    frameMax: 8192
  })
  t.notOk('heartbeat' in connectTarget('amqp://h/?heartbeat='), 'an empty heartbeat is absent (the broker\'s), not 0 (none at all)')
  t.equal(connectTarget('amqp://h/?heartbeat=0').heartbeat, 0, 'an explicit 0 stays 0')
  // No credentials: amqplib's guest default applies; no port: its protocol's default.
  t.same(connectTarget('amqp://[::1]'), { protocol: 'amqp', hostname: '::1', vhost: '' })
})

t.test('the rotation dials the start node, then each next one in turn, and stays put with one node', async (t) => {
  const urls = ['amqp://u:secret@a:1', 'amqp://u:secret@b:2', 'amqp://u:secret@c:3']
  const rotation = new NodeRotation(urls, 4)
  const seen = [rotation.target.hostname]
  for (let i = 0; i < 3; i++) {
    rotation.advance()
    seen.push(rotation.target.hostname)
  }
  t.same(seen, ['b', 'c', 'a', 'b'])
  t.notMatch(rotation.current, /secret/, 'the node is named without its password')
  const single = new NodeRotation(['amqp://x:1'], 0)
  const target = single.target
  single.advance()
  t.equal(single.target, target)
  t.equal(single.target.hostname, 'x')
})

t.test('reconnect delays: none within a pass over the nodes, a doubling backoff before each new pass, capped; one node backs off every time', async (t) => {
  const three = new NodeRotation(['amqp://a', 'amqp://b', 'amqp://c'], 0)
  const delays = Array.from({ length: 12 }, (_, i) => three.delayBefore(i + 1, 100, 1000))
  t.same(delays.map((delay, i) => (i + 1) % 3 === 0 ? 'backoff' : delay), [0, 0, 'backoff', 0, 0, 'backoff', 0, 0, 'backoff', 0, 0, 'backoff'])
  const within = (delay: number, base: number): boolean => delay >= Math.floor(base * 0.8) && delay <= Math.ceil(base * 1.2)
  t.ok(within(delays[2]!, 100) && within(delays[5]!, 200) && within(delays[8]!, 400), `passes 1 to 3: about 100, 200, 400 ms (${delays[2]}, ${delays[5]}, ${delays[8]})`)
  t.ok(three.delayBefore(300, 100, 1000) <= 1000, 'never past the maximum')
  const one = new NodeRotation(['amqp://a'], 0)
  t.ok(within(one.delayBefore(1, 100, 1000), 100) && within(one.delayBefore(2, 100, 1000), 200), 'one node: the backoff of every attempt')
})

t.test('broker.url as a list: validated, and the instance queue is quorum by default', async (t) => {
  const nodes = ['amqp://127.0.0.1:5681', 'amqp://127.0.0.1:5682']
  t.equal(resolveOptions({ broker: { url: nodes } }).broker.queueType, 'quorum', 'several nodes: quorum')
  t.equal(resolveOptions({ broker: { url: [nodes[0] as string] } }).broker.queueType, 'classic', 'one node in a list: classic')
  t.equal(resolveOptions({ broker: { url: nodes[0] } }).broker.queueType, 'classic', 'one URL: classic')
  t.equal(resolveOptions({ broker: { url: nodes, queueType: 'classic' } }).broker.queueType, 'classic', 'an explicit choice wins')
  t.equal(resolveOptions({ broker: { url: nodes[0], queueType: 'quorum' } }).broker.queueType, 'quorum')
  const given = [...nodes]
  const resolved = resolveOptions({ broker: { url: given } }).broker
  given.push('amqp://127.0.0.1:5683')
  t.same(resolved.url, nodes, 'the nodes are copied at register: a later change to the array does not reach the instance')
  const refused = (broker: unknown, message: RegExp): void => {
    t.throws(() => resolveOptions({ broker } as never), { code: 'FST_EVSOCK_BAD_OPTION', message }, String(message))
  }
  refused({ url: [] }, /broker\.url.*at least one node/)
  refused({ url: [nodes[0], 42] }, /broker\.url.*got number/)
  refused({ url: [nodes[0], 'http://127.0.0.1:5682'] }, /broker\.url.*amqp:\/\//)
  refused({ url: ['amqp://u:hunter2@a b:1'] }, /not a URL/)
  refused({ url: ['amqp://a:1/one', 'amqp://b:1/two'] }, /different vhosts \(one, two\)/)
  refused({ url: nodes, queueType: 'stream' }, /broker\.queueType.*'classic' or 'quorum'/)
  try {
    resolveOptions({ broker: { url: ['amqp://u:hunter2@a b:1'] } })
    t.fail('an unparsable URL was accepted')
  } catch (error) {
    t.notMatch((error as Error).message, 'hunter2', 'no password in the error')
  }
})

t.test('nodes on the real broker', async (t) => {
  if (!await requireBroker(t)) return

  t.test('the object form reaches the vhost and credentials its URL names', async (t) => {
    const url = await privateVhost(t)
    const vhost = vhostOf(url)
    const connection = await connect(connectTarget(url))
    const name = `evsock.nodes.${process.pid}`
    const channel = await connection.createChannel()
    await channel.assertQueue(name, { autoDelete: true })
    const queues = await rabbitmqctl('list_queues', '-p', vhost, 'name', '--quiet', '--no-table-headers')
    await connection.close()
    t.match(queues, name, `the queue was declared in ${vhost}`)
  })

  t.test('an instance starts on a live node when the others are dead', async (t) => {
    for (let i = 0; i < 4; i++) {
      const { bus } = await startBus(t, brokerOptions(t, { url: [DEAD_NODE, brokerUrl, DEAD_NODE] }))
      t.equal(bus.health().state, 'up')
    }
  })

  t.test('queueType quorum: the instance queue is a quorum queue with the length guard and expiry, and carries events', async (t) => {
    const options = brokerOptions(t, { queueType: 'quorum', queuePrefix: `evsock.test.quorum.${process.pid}` })
    const { bus, received } = await startBus(t, options)
    await bus.bind('orders.*')
    await bus.publish(busMessage('orders.quorum'))
    await waitFor(() => received.some((message) => message.topic === 'orders.quorum'), { what: 'the event through the quorum queue', timeoutMs: 5000 })
    const rows = (await rabbitmqctl('list_queues', 'name', 'type', 'arguments', '--quiet', '--no-table-headers')).split('\n')
    const row = rows.find((line) => line.startsWith(options.queuePrefix))
    t.match(row, /\tquorum\t/, 'declared as a quorum queue')
    t.match(row, /x-max-length/)
    t.match(row, /drop-head/)
    t.match(row, /x-expires/)
    await bus.close()
    const name = (row as string).split('\t')[0] as string
    await t.rejects(withChannel(brokerUrl, (channel) => channel.checkQueue(name)), /404/, 'close deleted the quorum queue too')
  })

  t.test('no node answers: start fails naming every node, without passwords', async (t) => {
    await t.rejects(startBus(t, brokerOptions(t, { url: [DEAD_NODE, 'amqp://guest:guest@127.0.0.1:2'], publishTimeoutMs: 1500 })), {
      code: 'FST_EVSOCK_BROKER_UNAVAILABLE',
      message: /127\.0\.0\.1:1\/? or amqp:\/\/guest:\*\*\*@127\.0\.0\.1:2/
    })
  })

  t.test('instances spread across the nodes', async (t) => {
    const proxies = [await startAmqpProxy(t), await startAmqpProxy(t)]
    for (let i = 0; i < 16; i++) await startBus(t, brokerOptions(t, { url: proxies.map((proxy) => proxy.url) }))
    const counts = proxies.map((proxy) => proxy.roles().length)
    t.equal(counts[0]! + counts[1]!, 32, 'every instance holds two connections')
    t.ok(counts[0]! > 0 && counts[1]! > 0, `both nodes hold connections (${counts.join(' and ')}; all on one node has odds 1 in 32768)`)
  })

  t.test('a node that goes: both connections fail over to the next, and events flow again', async (t) => {
    const proxies = [await startAmqpProxy(t), await startAmqpProxy(t)]
    const options = brokerOptions(t, { url: proxies.map((proxy) => proxy.url) })
    const { bus, received } = await startBus(t, options)
    const holding = (proxy: AmqpProxy): number => proxy.roles().length
    const first = proxies.find((proxy) => holding(proxy) === 2)
    const other = proxies.find((proxy) => proxy !== first) as AmqpProxy
    t.ok(first, 'both connections start on one node')
    t.equal(holding(other), 0)

    await bus.bind('orders.*')
    first!.refuse(true)
    first!.cutAll()
    await waitFor(() => holding(other) === 2 && bus.health().state === 'up', { what: 'both connections up again on the other node', timeoutMs: 5000 })
    t.equal(bus.health().reconnects, 1)
    await bus.publish(busMessage('orders.after'))
    await waitFor(() => received.some((message) => message.topic === 'orders.after'), { what: 'the event published after the failover to arrive', timeoutMs: 5000 })
  })
})
