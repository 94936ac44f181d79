import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import type { ResolvedHistoryOptions } from '../options.js'
import { historyContract } from './contract-history.js'
import type { Bus, BusMessage } from './types.js'

// The bus contract as a test suite, exported (`fastify-event-socket/bus-contract`)
// as mqemitter exports its abstract test: run it against your own bus before
// passing it as the `bus` option. It asserts with node:assert only and takes
// the test function of your runner, so it needs no test framework of ours.
// Absence is always proven with a sentinel published after (one publisher's
// messages arrive in order), never with a sleep.

/** One named test: tap's `(name, fn) => t.test(name, fn)`, or node:test's `test`. */
export type ContractTest = (name: string, fn: () => Promise<void>) => unknown

export interface BusContractOptions {
  /**
   * A new, not yet started bus. Every bus one factory makes must share one
   * transport, as the instances of one app do. Given `history` when the
   * suite runs with it: the bus then keeps one (`bus.history`).
   */
  createBus: (history?: ResolvedHistoryOptions) => Bus | Promise<Bus>
  /** Runs every test on buses made with these history options, and the history tests (`BusHistory`) besides. */
  history?: ResolvedHistoryOptions
  /** The bus reaches only its own instance (like the in-process bus): leaves out the tests between instances. */
  singleInstance?: boolean
  /** Longest wait for one expected delivery, ms. Default 5000. */
  timeoutMs?: number
}

interface Instance {
  bus: Bus
  received: BusMessage[]
  /** Topics received, in order. */
  topics: () => string[]
}

export function busContract (test: ContractTest, options: BusContractOptions): void {
  const timeoutMs = options.timeoutMs ?? 5000
  // Topics unique to one run, so that buses sharing a long-lived transport never see another run's messages.
  const run = (): string => `c${randomUUID().replaceAll('-', '')}`

  async function withInstances (count: number, use: (...instances: Instance[]) => Promise<void>, deliver?: (message: BusMessage) => void): Promise<void> {
    const instances: Instance[] = []
    try {
      for (let i = 0; i < count; i++) {
        const received: BusMessage[] = []
        const bus = await options.createBus(options.history)
        instances.push({ bus, received, topics: () => received.map((each) => each.topic) })
        await bus.start((message) => {
          received.push(message)
          deliver?.(message)
        })
      }
      await use(...instances)
    } finally {
      await Promise.all(instances.map((instance) => instance.bus.close()))
    }
  }

  async function waitFor (condition: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!condition()) {
      if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`)
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  }

  /** Publishes a sentinel on `topic` (bound by every `to`) and waits for it: whatever `from` published before has then arrived. */
  async function settle (from: Instance, to: Instance[], topic: string): Promise<void> {
    const sentinel = message(topic)
    await from.bus.publish(sentinel)
    for (const instance of to) await waitFor(() => instance.received.some((each) => each.id === sentinel.id), `the sentinel ${topic}`)
  }

  /** The instance that publishes: another one when the bus links instances, so that routing between them is what is tested. */
  const publishers = options.singleInstance === true ? 1 : 2

  test('start resolves; health names the kind and reports up', async () => {
    await withInstances(1, async ({ bus }) => {
      assert.equal(typeof bus.kind, 'string')
      assert.ok(bus.kind.length > 0, 'kind is not empty')
      const health = bus.health()
      assert.equal(health.kind, bus.kind)
      assert.equal(health.state, 'up')
      assert.equal(typeof health.buffered, 'number')
      assert.equal(typeof health.unconfirmed, 'number')
    })
  })

  test('a message on a bound pattern is delivered once, intact', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [Instance, Instance?]
      const prefix = run()
      await to.bus.bind(`${prefix}.*`)
      const sent: BusMessage = { id: randomUUID(), topic: `${prefix}.one`, time: Date.now() - 1234, payload: Buffer.from(JSON.stringify({ text: 'zaž 🚀', n: [1, 2] })) }
      await from.bus.publish(sent)
      await settle(from, [to], `${prefix}.end`)
      assert.equal(to.received.length, 2, 'the message and the sentinel, once each')
      const [got] = to.received as [BusMessage]
      assert.equal(got.id, sent.id)
      assert.equal(got.topic, sent.topic)
      assert.equal(got.time, sent.time, 'the publish time, to the millisecond')
      assert.ok(got.payload.equals(sent.payload), 'the payload bytes untouched')
    })
  })

  test('routing follows the patterns exactly: * is one word, # zero or more; a message matching several is delivered once', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [Instance, Instance?]
      const p = run()
      const patterns = [`${p}.a.*`, `${p}.b.#`, `${p}.#.z`, `${p}.c.*.#.d`, `${p}.e`, `${p}.end`]
      await Promise.all(patterns.map((pattern) => to.bus.bind(pattern)))
      const matching = ['a.1', 'b', 'b.1.2', 'z', 'q.z', 'c.1.d', 'c.1.2.3.d', 'e', 'b.z'].map((topic) => `${p}.${topic}`)
      const other = ['a', 'a.1.2', 'z.q', 'c.1.d.x', 'c.d', 'e.1', 'x'].map((topic) => `${p}.${topic}`)
      for (const topic of [...other, ...matching]) await from.bus.publish(message(topic))
      await settle(from, [to], `${p}.end`)
      assert.deepEqual(to.topics(), [...matching, `${p}.end`])
    })
  })

  test('messages from one publisher arrive in publish order, even when not awaited one by one', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [Instance, Instance?]
      const p = run()
      await to.bus.bind(`${p}.#`)
      const sent = Array.from({ length: 100 }, (_, i) => message(`${p}.n${i}`))
      await Promise.all(sent.map((each) => from.bus.publish(each)))
      await waitFor(() => to.received.length >= sent.length, `${sent.length} deliveries`)
      assert.deepEqual(to.received.map((each) => each.id), sent.map((each) => each.id))
    })
  })

  test('unbind stops delivery; bound again, routed again', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [Instance, Instance?]
      const p = run()
      await Promise.all([to.bus.bind(`${p}.x.*`), to.bus.bind(`${p}.end`)])
      await from.bus.publish(message(`${p}.x.1`))
      // Settled first: what was on its way when unbind was called may or may not arrive.
      await settle(from, [to], `${p}.end`)
      await to.bus.unbind(`${p}.x.*`)
      await from.bus.publish(message(`${p}.x.2`))
      await settle(from, [to], `${p}.end`)
      await to.bus.bind(`${p}.x.*`)
      await from.bus.publish(message(`${p}.x.3`))
      await settle(from, [to], `${p}.end`)
      assert.deepEqual(to.topics(), [`${p}.x.1`, `${p}.end`, `${p}.end`, `${p}.x.3`, `${p}.end`])
    })
  })

  test('patterns alike up to their # are bound and unbound on their own, and filter exactly', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [Instance, Instance?]
      const p = run()
      await Promise.all([`${p}.#.x`, `${p}.#.y`, `${p}.*.#.y`, `${p}.end`].map((pattern) => to.bus.bind(pattern)))
      const round = async (n: number): Promise<void> => {
        for (const last of ['x', 'y', 'z']) await from.bus.publish(message(`${p}.${n}.${last}`))
        await settle(from, [to], `${p}.end`)
      }
      await round(1)
      await to.bus.unbind(`${p}.#.x`)
      await round(2)
      await to.bus.unbind(`${p}.#.y`)
      await round(3)
      await to.bus.unbind(`${p}.*.#.y`)
      await round(4)
      assert.deepEqual(to.topics(), [
        `${p}.1.x`, `${p}.1.y`, `${p}.end`,
        `${p}.2.y`, `${p}.end`,
        `${p}.3.y`, `${p}.end`,
        `${p}.end`
      ])
    })
  })

  test('concurrent binds of many patterns all resolve and route', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [Instance, Instance?]
      const p = run()
      const patterns = Array.from({ length: 30 }, (_, i) => `${p}.many.${i}.*`)
      await Promise.all([...patterns, `${p}.end`].map((pattern) => to.bus.bind(pattern)))
      for (let i = 0; i < 30; i += 7) await from.bus.publish(message(`${p}.many.${i}.w`))
      await settle(from, [to], `${p}.end`)
      assert.deepEqual(to.topics(), [0, 7, 14, 21, 28].map((i) => `${p}.many.${i}.w`).concat(`${p}.end`))
    })
  })

  test('control keys under $evsock. are carried to every instance bound to them', async () => {
    await withInstances(publishers, async (...instances) => {
      const key = `$evsock.contract-${run()}`
      await Promise.all(instances.map((instance) => instance.bus.bind(key)))
      const control = message(key)
      const from = instances[instances.length - 1] as Instance
      await from.bus.publish(control)
      for (const instance of instances) {
        await waitFor(() => instance.received.some((each) => each.id === control.id), `the control message on ${instances.indexOf(instance)}`)
      }
    })
  })

  test('a deliver that throws neither rejects the publish nor stops delivery', async () => {
    let throws = true
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [Instance, Instance?]
      const p = run()
      await to.bus.bind(`${p}.#`)
      await from.bus.publish(message(`${p}.first`))
      await waitFor(() => to.received.length === 1, 'the first message')
      throws = false
      await settle(from, [to], `${p}.second`)
      assert.deepEqual(to.topics(), [`${p}.first`, `${p}.second`], 'the first delivered once, not again')
    }, () => {
      if (throws) throw new Error('deliver failed (thrown on purpose by the bus contract)')
    })
  })

  test('after close: publish and bind reject, unbind resolves, health says closed, close again resolves', async () => {
    await withInstances(1, async ({ bus }) => {
      await bus.close()
      await Promise.all([bus.close(), bus.close()])
      assert.equal(bus.health().state, 'closed')
      await assert.rejects(bus.publish(message('after.close')), 'publish rejects')
      await assert.rejects(bus.bind('after.close'), 'bind rejects')
      await bus.unbind('after.close')
    })
  })

  if (options.history !== undefined) historyContract(test, { withInstances, waitFor, run, message, publishers, timeoutMs })

  if (options.singleInstance === true) return

  test('a publish reaches every instance with a matching pattern and no other, the publisher included', async () => {
    await withInstances(3, async (a, b, c) => {
      const p = run()
      const instances = [a, b, c] as Instance[]
      await Promise.all(instances.map((instance) => instance.bus.bind(`${p}.end`)))
      await b?.bus.bind(`${p}.m.*`)
      await c?.bus.bind(`${p}.m.#`)
      await a?.bus.bind(`${p}.self`)
      for (const topic of ['m.1', 'm.1.2', 'self', 'none']) await a?.bus.publish(message(`${p}.${topic}`))
      await settle(a as Instance, instances, `${p}.end`)
      assert.deepEqual(a?.topics(), [`${p}.self`, `${p}.end`], 'the publisher got what it bound, through the bus')
      assert.deepEqual(b?.topics(), [`${p}.m.1`, `${p}.end`])
      assert.deepEqual(c?.topics(), [`${p}.m.1`, `${p}.m.1.2`, `${p}.end`])
    })
  })
}

function message (topic: string): BusMessage {
  return { id: randomUUID(), topic, time: Date.now(), payload: Buffer.from(JSON.stringify({ topic })) }
}
