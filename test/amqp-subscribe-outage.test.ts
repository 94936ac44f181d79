import t from 'tap'
import { brokerOptions, privateVhost, rabbitmqctl, requireBroker } from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'
import { openClient, startServer, type TestServer } from './helpers/server.js'

// A `sub` made while the broker is away: its `ok` must mean the binding exists
// on the broker, so that what other instances publish from then on reaches
// the socket; when the broker stays away past the bound, the client gets
// UNAVAILABLE and the server holds nothing. The file has a vhost of its own,
// so dropping connections disturbs nobody else's tests; its tests run one
// after the other, so they do not disturb each other either. rabbitmqctl is
// slow on a loaded machine (seconds a call), hence one vhost for both.

function vhostOf (url: string): string {
  return decodeURIComponent(new URL(url).pathname.slice(1))
}

const up = (server: TestServer): boolean => server.app.eventSocket.health().broker.state === 'up'

if (await requireBroker(t)) {
  const url = await privateVhost(t)
  const vhost = vhostOf(url)

  t.test('a sub during a dropped connection: ok only once bound, and an event published right after ok is delivered', async (t) => {
    const broker = brokerOptions(t, { url, publishTimeoutMs: 8000 })
    const publishing = await startServer(t, { broker })
    // A slow first reconnect leaves the subscribing instance down for a while.
    const subscribing = await startServer(t, { broker: { ...broker, reconnectInitialDelayMs: 1500, reconnectMaxDelayMs: 1500 } })
    const client = await openClient(t, subscribing)
    t.equal((await client.subscribe('end')).op, 'ok', 'sentinel pattern subscribed while up')

    await rabbitmqctl('close_all_connections', '--vhost', vhost, 'evsock subscribe outage test')
    await waitFor(() => !up(subscribing), { what: 'the subscribing instance to notice the drop' })
    const answer = await client.subscribe('orders.*')
    t.equal(answer.op, 'ok', 'the sub is accepted once the broker is back')
    // Confirmed means routed: had the binding not existed yet, the broker would have dropped it.
    const { id } = await publishing.app.publish('orders.created', { right: 'after ok' })

    await waitFor(() => up(subscribing), { what: 'the subscribing instance back up' })
    await publishing.app.publish('end', { sentinel: true })
    await client.next((message) => message.op === 'event' && message.topic === 'end', { timeout: 10_000 })
    t.same(client.events().map((event) => event.topic), ['orders.created', 'end'], 'the event published right after ok arrived, before the sentinel')
    t.equal(client.events()[0]?.id, id, 'it is that event')
  })

  t.test('a sub while the broker stays away past the bound: UNAVAILABLE, and no subscription held', async (t) => {
    const broker = brokerOptions(t, { url, publishTimeoutMs: 1500 })
    const publishing = await startServer(t, { broker })
    const subscribing = await startServer(t, { broker })
    const client = await openClient(t, subscribing)
    t.equal((await client.subscribe('end')).op, 'ok', 'sentinel pattern subscribed while up')

    // Without permissions every reconnect is refused until they come back.
    await rabbitmqctl('clear_permissions', '-p', vhost, 'guest')
    let restored = false
    const restore = async (): Promise<void> => {
      if (!restored) await rabbitmqctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*')
      restored = true
    }
    t.teardown(restore)
    await rabbitmqctl('close_all_connections', '--vhost', vhost, 'evsock subscribe outage test')
    await waitFor(() => !up(subscribing), { what: 'the subscribing instance to notice the drop' })

    const answer = await client.subscribe('orders.*')
    t.match(answer, { op: 'error', code: 'UNAVAILABLE' }, 'the sub is refused with UNAVAILABLE')
    t.equal(subscribing.app.eventSocket.stats().subscriptions, 1, 'only the sentinel subscription is held')

    await restore()
    await waitFor(() => up(subscribing) && up(publishing), { what: 'both instances back up', timeoutMs: 15_000 })
    const consumed = subscribing.app.eventSocket.stats().eventsIn
    await publishing.app.publish('orders.created', { refused: true })
    await publishing.app.publish('end', { sentinel: true })
    await client.next((message) => message.op === 'event' && message.topic === 'end', { timeout: 10_000 })
    t.same(client.events().map((event) => event.topic), ['end'], 'nothing delivered for the refused pattern')
    t.equal(subscribing.app.eventSocket.stats().eventsIn, consumed + 1, 'nor routed to the instance: the pattern is not bound on the broker')
  })
}
