import t from 'tap'
import { brokerOptions, busMessage, privateVhost, rabbitmqctl, requireBroker, startBus } from './helpers/broker.js'
import { waitFor } from './helpers/wait.js'

// The broker drops every connection in the middle of a stream of publishes.
// Each test runs in a vhost of its own, so the drop hits nobody else's tests.

/** Pacing between two bursts, so that the drop lands among publishes in flight. */
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function dropAllConnections (vhost: string): Promise<void> {
  await rabbitmqctl('close_all_connections', '--vhost', decodeURIComponent(new URL(vhost).pathname.slice(1)), 'evsock fault test')
}

if (await requireBroker(t)) {
  t.test('connections dropped mid-stream: every publish resolved-and-delivered or rejected with the typed error', async (t) => {
    const url = await privateVhost(t)
    const options = brokerOptions(t, { url, publishTimeoutMs: 8000 })
    const publisher = await startBus(t, options)
    const subscriber = await startBus(t, options)
    await subscriber.bus.bind('fault.#')

    // Bursts, so that some publishes are in flight (sent, unconfirmed) when the connections drop.
    const outcomes: Array<Promise<{ id: string, ok: boolean, code?: string }>> = []
    let dropped = false
    let burst = 0
    let burstsAfterDrop = 0
    while (burstsAfterDrop < 40 && burst < 600) {
      for (let i = 0; i < 5; i++) {
        const each = busMessage(`fault.${i}.n`)
        outcomes.push(publisher.bus.publish(each).then(
          () => ({ id: each.id, ok: true }),
          (error: { code?: string }) => ({ id: each.id, ok: false, code: error.code })
        ))
      }
      if (++burst === 20) dropAllConnections(url).then(() => { dropped = true }, t.error)
      if (dropped) burstsAfterDrop++
      await sleep(5)
    }
    t.ok(dropped, 'the connections were dropped while publishing')
    const results = await Promise.all(outcomes)
    const resolved = results.filter((each) => each.ok)
    const rejected = results.filter((each) => !each.ok)
    t.same([...new Set(rejected.map((each) => each.code))].filter((code) => code !== 'FST_EVSOCK_BROKER_UNAVAILABLE'), [], 'every rejection is FST_EVSOCK_BROKER_UNAVAILABLE')
    t.ok(resolved.length > outcomes.length / 2, `most publishes resolved (${resolved.length} resolved, ${rejected.length} rejected)`)

    const delivered = (): Set<string> => new Set(subscriber.received.map((each) => each.id))
    await waitFor(() => resolved.every((each) => delivered().has(each.id)), { what: 'every resolved publish delivered', timeoutMs: 15_000 })
      .catch(() => {})
    const lost = resolved.filter((each) => !delivered().has(each.id))
    t.same(lost, [], 'no publish resolved and lost')
    t.equal(subscriber.received.length, delivered().size, 'no message delivered twice')

    for (const { entries } of [publisher, subscriber]) {
      t.ok(entries.some((entry) => entry.level === 40 && entry.msg.includes('connection lost')), 'the drop is logged at warn')
      t.ok(entries.filter((entry) => entry.level === 30 && entry.msg.includes('connection up')).length >= 2, 'the recovery is logged at info')
    }
    t.match(publisher.bus.health(), { state: 'up', buffered: 0, unconfirmed: 0, lastError: /CONNECTION_FORCED|evsock fault test/ })

    const after = busMessage('fault.after.recovery')
    await publisher.bus.publish(after)
    await waitFor(() => delivered().has(after.id), { what: 'a delivery after recovery' })
    t.pass('a binding made before the drop still delivers after it')
  })

  t.test('bind and unbind during an outage take effect on recovery; bind waits for it', async (t) => {
    const url = await privateVhost(t)
    const options = brokerOptions(t, { url })
    const publisher = await startBus(t, options)
    // A slow first reconnect leaves a window to change bindings while down.
    const subscriber = await startBus(t, { ...options, reconnectInitialDelayMs: 1500, reconnectMaxDelayMs: 1500 })
    await subscriber.bus.bind('gone.*')
    await subscriber.bus.bind('end')

    // Taken before the drop, not when the poll below sees it: on a loaded machine that can be late by most of the reconnect delay.
    const dropAt = Date.now()
    await dropAllConnections(url)
    await waitFor(() => subscriber.bus.health().state === 'down', { what: 'the subscriber to notice the drop' })
    await subscriber.bus.unbind('gone.*')
    t.equal(subscriber.bus.health().state, 'down', 'unbind resolved while down (recovery unbinds)')
    await subscriber.bus.bind('new.*')
    // The first reconnect comes 1500 ms (±20 % jitter) after the drop: a bind that resolves sooner was not made on the broker.
    t.ok(Date.now() - dropAt >= 1100, `bind resolved only after the reconnect (${Date.now() - dropAt} ms after the drop)`)

    await waitFor(() => subscriber.bus.health().state === 'up' && publisher.bus.health().state === 'up', { what: 'both up again' })
    await publisher.bus.publish(busMessage('gone.x'))
    await publisher.bus.publish(busMessage('new.x'))
    const sentinel = busMessage('end')
    await publisher.bus.publish(sentinel)
    await waitFor(() => subscriber.received.some((each) => each.id === sentinel.id), { what: 'the sentinel' })
    t.same(subscriber.received.map((each) => each.topic), ['new.x', 'end'], 'the stale binding was removed, the new one made')
  })

  t.test('a longer outage: publishes wait in the buffer and go out, in order, once the broker is back', async (t) => {
    const url = await privateVhost(t)
    const vhost = decodeURIComponent(new URL(url).pathname.slice(1))
    const options = brokerOptions(t, { url })
    const publisher = await startBus(t, options)
    const subscriber = await startBus(t, options)
    await subscriber.bus.bind('outage.#')

    // Without permissions every reconnect is refused until they come back.
    await rabbitmqctl('clear_permissions', '-p', vhost, 'guest')
    await dropAllConnections(url)
    await waitFor(() => publisher.bus.health().state === 'down', { what: 'the publisher to notice the drop' })
    const sent = Array.from({ length: 20 }, (_, n) => busMessage(`outage.${n}`))
    const refusals = (): number => publisher.entries.filter((entry) => entry.msg.includes('attempt failed')).length
    const refusedBefore = refusals()
    const publishes = sent.map((each) => publisher.bus.publish(each))
    // A reconnect refused after the publishes: they stay buffered through it, neither sent nor rejected.
    await waitFor(() => refusals() > refusedBefore, { what: 'a reconnect to be refused' })
    t.match(publisher.bus.health(), { state: 'down', buffered: 20, unconfirmed: 0 }, 'buffered while refused')

    await rabbitmqctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*')
    await Promise.all(publishes)
    t.pass('every buffered publish resolved after the reconnect')
    await waitFor(() => subscriber.received.length === sent.length, { what: 'the buffered events delivered' })
    t.same(subscriber.received.map((each) => each.id), sent.map((each) => each.id), 'in publish order')
  })
}
