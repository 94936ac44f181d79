import assert from 'node:assert/strict'
import type { Bus, BusHistory, BusMessage, HistoryCursor } from './types.js'

// The history section of the bus contract (contract.ts; BusHistory in
// types.ts, docs/protocol.md section 6), run on buses made with the history
// option. It holds for any bus kind: it never assumes how offsets are spaced
// (they only increase) nor what a position looks like, and a history shared
// by earlier runs (a broker's stream) may hold anything before them.

/** What the history tests borrow from the contract's own helpers. */
export interface HistoryKit {
  withInstances: (count: number, use: (...instances: HistoryInstance[]) => Promise<void>) => Promise<void>
  waitFor: (condition: () => boolean, what: string) => Promise<void>
  /** A topic prefix unique to one run. */
  run: () => string
  message: (topic: string) => BusMessage
  /** How many instances a test between instances uses (1 for a single-instance bus). */
  publishers: number
  timeoutMs: number
}

export interface HistoryInstance {
  bus: Bus
  received: BusMessage[]
}

type Test = (name: string, fn: () => Promise<void>) => unknown

export function historyContract (test: Test, kit: HistoryKit): void {
  const { withInstances, waitFor, run, message, publishers } = kit

  function historyOf (bus: Bus): BusHistory {
    assert.ok(bus.history !== undefined, 'a bus made with the history option has bus.history')
    return bus.history
  }

  /** Publishes `count` messages under `prefix` and waits until `to` got all of them: returns them as delivered. */
  async function publishSeen (from: HistoryInstance, to: HistoryInstance, prefix: string, count: number): Promise<BusMessage[]> {
    const sent = Array.from({ length: count }, (_, i) => message(`${prefix}.n${i}`))
    await Promise.all(sent.map((each) => from.bus.publish(each)))
    const ids = new Set(sent.map((each) => each.id))
    const seen = (): BusMessage[] => to.received.filter((each) => ids.has(each.id))
    await waitFor(() => seen().length === count, `${count} deliveries`)
    return seen()
  }

  /** The next `count` messages of `cursor` whose topic starts with `prefix` (a shared history holds others' too), each within the timeout. */
  async function readOwn (cursor: HistoryCursor, prefix: string, count: number): Promise<BusMessage[]> {
    const own: BusMessage[] = []
    while (own.length < count) {
      const next = await within(cursor.next(), kit.timeoutMs, `message ${own.length + 1} of ${count} from the cursor`)
      if (!('skipped' in next) && next.topic.startsWith(`${prefix}.`)) own.push(next)
    }
    return own
  }

  test('history: every delivery carries an offset; offsets increase in publish order, the same on every instance', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [HistoryInstance, HistoryInstance?]
      const p = run()
      await Promise.all(instances.map((instance) => instance.bus.bind(`${p}.#`)))
      const delivered = await publishSeen(from, to, p, 50)
      const offsets = delivered.map((each) => each.offset)
      assert.ok(offsets.every((offset) => Number.isSafeInteger(offset) && (offset as number) >= 0), 'integer offsets')
      assert.ok(offsets.every((offset, i) => i === 0 || (offset as number) > (offsets[i - 1] as number)), `increasing: ${offsets.join(' ')}`)
      for (const instance of instances) {
        await waitFor(() => instance.received.length >= delivered.length, 'the other instance\'s deliveries')
        assert.deepEqual(instance.received.map((each) => [each.id, each.offset]), delivered.map((each) => [each.id, each.offset]), 'the same offsets everywhere')
      }
    })
  })

  test('history: head advances past messages no bound pattern matches', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [HistoryInstance, HistoryInstance?]
      const p = run()
      await to.bus.bind(`${p}.wanted.*`)
      const [wanted] = await publishSeen(from, to, `${p}.wanted`, 1)
      const history = historyOf(to.bus)
      const offset = wanted?.offset as number
      assert.ok(history.head >= offset, 'head is at least the offset of what was delivered')
      // Published last, so that nothing after it can move head instead.
      await from.bus.publish(message(`${p}.unwanted`))
      await waitFor(() => history.head > offset, `head to pass ${offset} on the unwanted message`)
      assert.equal(to.received.length, 1, 'the unwanted message was not delivered')
    })
  })

  test('history: read(from) gives the retained messages from `from` on, in order, as the live path got them', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [HistoryInstance, HistoryInstance?]
      const p = run()
      await to.bus.bind(`${p}.#`)
      const delivered = await publishSeen(from, to, p, 10)
      const cursor = historyOf(to.bus).read(delivered[3]?.offset as number)
      try {
        const read = await readOwn(cursor, p, 7)
        assert.deepEqual(read.map(comparable), delivered.slice(3).map(comparable))
      } finally {
        cursor.close()
      }
    })
  })

  test('history: a cursor at the end waits, and reads what is published after it opened', async () => {
    await withInstances(publishers, async (...instances) => {
      const [to, from = to] = instances as [HistoryInstance, HistoryInstance?]
      const p = run()
      await to.bus.bind(`${p}.#`)
      await publishSeen(from, to, `${p}.before`, 1)
      const history = historyOf(to.bus)
      const cursor = history.read(history.head + 1)
      try {
        const waiting = readOwn(cursor, p, 3)
        const after = await publishSeen(from, to, `${p}.after`, 3)
        assert.deepEqual((await waiting).map(comparable), after.map(comparable))
      } finally {
        cursor.close()
      }
    })
  })

  test('history: oldest() is a retained offset, at most that of a message just delivered; retains() agrees', async () => {
    await withInstances(1, async (instance) => {
      const p = run()
      await instance.bus.bind(`${p}.#`)
      const [delivered] = await publishSeen(instance, instance, p, 1)
      const history = historyOf(instance.bus)
      const [a, b] = await Promise.all([history.oldest(), history.oldest()])
      assert.ok(Number.isSafeInteger(a) && a >= 0, `an offset: ${a}`)
      assert.ok(a <= (delivered?.offset as number), `${a} <= ${delivered?.offset}`)
      assert.equal(a, b, 'concurrent calls agree')
      assert.equal(await history.retains(a), true, 'retains(oldest())')
      assert.equal(await history.retains(delivered?.offset as number), true, 'retains the message just delivered')
      const cursor = history.read(a)
      try {
        const first = await within(cursor.next(), kit.timeoutMs, 'the oldest message')
        assert.equal(first.offset, a, 'reading from oldest() starts at it')
      } finally {
        cursor.close()
      }
    })
  })

  test('history: parse(format(offset)) gives the offset back; any other string is refused', async () => {
    await withInstances(1, async (instance) => {
      const { bus } = instance
      const history = historyOf(bus)
      const format = (offset: number): string => history.format(offset)
      const parse = (pos: string): number | undefined => history.parse(pos)
      // A history must read back every position it issued; one it has not issued yet it may refuse.
      const p = run()
      await bus.bind(`${p}.#`)
      await publishSeen(instance, instance, p, 3)
      const issued = [history.head - 2, history.head - 1, history.head]
      for (const offset of issued) assert.equal(parse(format(offset)), offset, `parse(format(${offset})), an issued offset`)
      const offsets = [...issued, 0, 1, 9, 10, 35, 36, 255, 65_535, 123_456_789, 2 ** 32, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER]
      for (const offset of offsets) {
        const pos = format(offset)
        assert.equal(typeof pos, 'string')
        const back = parse(pos)
        assert.ok(back === offset || (back === undefined && offset > history.head), `parse(format(${offset})) is ${String(back)}`)
      }
      for (const junk of ['', ' ', 'garbage', 'null', '💥', 'x'.repeat(10_000), ` ${format(5)}`, `${format(5)} `, `${format(5)}\n`]) {
        assert.equal(parse(junk), undefined, `parse(${JSON.stringify(junk.slice(0, 40))})`)
      }
      assert.equal(parse(format(2 ** 53)), undefined, 'an offset past the safe integers')
      // Mutations of valid positions: refused, or the canonical position of another offset.
      for (const pos of offsets.map((offset) => format(offset))) {
        for (const variant of [pos.toUpperCase(), `0${pos}`, `${pos}0`, pos.slice(1), pos.slice(0, -1), `-${pos}`, pos.replace(/\d/, '9')]) {
          const offset = parse(variant)
          if (offset !== undefined) assert.equal(format(offset), variant, `parse(${JSON.stringify(variant)}) is ${offset}, whose position is another string`)
        }
      }
    })
  })

  test('history: close rejects a pending next with FST_EVSOCK_CLOSED, and so does bus close for the cursors still open', async () => {
    await withInstances(1, async (instance) => {
      const { bus } = instance
      const p = run()
      await bus.bind(`${p}.#`)
      // Taken first, so that the cursors start past everything the history holds.
      await publishSeen(instance, instance, p, 1)
      const history = historyOf(bus)
      const cursor = history.read(history.head + 1)
      const pending = cursor.next()
      cursor.close()
      cursor.close()
      await assert.rejects(within(pending, kit.timeoutMs, 'the rejection by close'), { code: 'FST_EVSOCK_CLOSED' })
      await assert.rejects(cursor.next(), { code: 'FST_EVSOCK_CLOSED' }, 'next after close')
      const open = history.read(history.head + 1)
      const rejected = assert.rejects(within(open.next(), kit.timeoutMs, 'the rejection by bus close'), { code: 'FST_EVSOCK_CLOSED' })
      await bus.close()
      await rejected
    })
  })
}

function comparable ({ id, topic, time, payload, offset }: BusMessage): unknown[] {
  return [id, topic, time, payload.toString('base64'), offset]
}

async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((resolve, reject) => { timer = setTimeout(() => reject(new assert.AssertionError({ message: `timed out after ${ms} ms waiting for ${what}` })), ms) })
  try {
    return await Promise.race([promise, expired])
  } finally {
    clearTimeout(timer)
  }
}
