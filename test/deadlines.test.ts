import t from 'tap'
import { Deadlines } from '../lib/deadlines.js'
import { waitFor } from './helpers/wait.js'

t.test('deadlines fire in time order, each once, at or after their time', async (t) => {
  const fired: Array<[string, number, number]> = []
  const deadlines = new Deadlines<string>((item, at) => fired.push([item, at, Date.now()]))
  const now = Date.now()
  deadlines.add(now + 60, 'c')
  deadlines.add(now + 20, 'a')
  deadlines.add(now + 40, 'b')
  deadlines.add(now + 20, 'a2')
  deadlines.add(now + 40, 'gone')
  deadlines.delete(now + 40, 'gone')
  // 'c' is the last: had 'gone' fired, it would be in by then.
  await waitFor(() => fired.some(([item]) => item === 'c'), { what: 'the last deadline to fire' })
  t.same(fired.map(([item]) => item), ['a', 'a2', 'b', 'c'])
  for (const [item, at, firedAt] of fired) t.ok(firedAt >= at, `${item} not early`)
  deadlines.close()
})

t.test('an earlier deadline added later re-arms the timer', async (t) => {
  const fired: string[] = []
  const deadlines = new Deadlines<string>((item) => fired.push(item))
  deadlines.add(Date.now() + 10_000, 'late')
  deadlines.add(Date.now() + 10, 'soon')
  await waitFor(() => fired.length > 0, { what: 'the earlier deadline to fire' })
  t.same(fired, ['soon'])
  deadlines.close()
})

t.test('a deadline past setTimeout\'s limit does not fire early', async (t) => {
  const fired: string[] = []
  const deadlines = new Deadlines<string>((item) => fired.push(item))
  deadlines.add(Date.now() + 2 ** 31 + 5000, 'far')
  // Node fires timers in expiry order, and one armed past its limit runs after
  // 1 ms: a sentinel deadline on a timer armed after it proves it did not fire.
  const sentinel = new Deadlines<string>((item) => fired.push(item))
  sentinel.add(Date.now() + 20, 'sentinel')
  await waitFor(() => fired.length > 0, { what: 'the sentinel deadline' })
  t.same(fired, ['sentinel'])
  sentinel.close()
  deadlines.close()
})

t.test('many deadlines in random order come out sorted', async (t) => {
  const fired: number[] = []
  const deadlines = new Deadlines<number>((_item, at) => fired.push(at))
  const base = Date.now() - 1000
  const times = Array.from({ length: 500 }, () => base + Math.floor(Math.random() * 900))
  times.forEach((at, i) => deadlines.add(at, i))
  await waitFor(() => fired.length >= 500, { what: '500 past deadlines to fire', detail: () => `${fired.length} fired` })
  t.equal(fired.length, 500)
  t.same(fired, [...fired].sort((a, b) => a - b))
  deadlines.close()
})

t.test('moving one deadline again and again (a client refreshing its token in a loop) keeps the heap bounded', async (t) => {
  const fired: Array<[string, number]> = []
  const deadlines = new Deadlines<string>((item, at) => fired.push([item, at]))
  const base = Date.now() + 3_600_000
  deadlines.add(base - 1000, 'other')
  let at = base
  deadlines.add(at, 'refresher')
  for (let i = 1; i <= 10_000; i++) {
    // What Connection#setDeadline does on each `auth`: drop the old time, add the new one.
    deadlines.delete(at, 'refresher')
    at = base + i
    deadlines.add(at, 'refresher')
    if (deadlines.heapSize > 64) break
  }
  t.ok(deadlines.heapSize <= 64, `the heap holds ${deadlines.heapSize} times for 2 live deadlines`)

  // Still correct after the rebuilds: both fire, in order, once.
  deadlines.add(Date.now() + 5, 'soon')
  deadlines.delete(at, 'refresher')
  deadlines.add(Date.now() + 10, 'refresher')
  deadlines.delete(base - 1000, 'other')
  await waitFor(() => fired.some(([item]) => item === 'refresher'), { what: 'the refresher to fire' })
  t.same(fired.map(([item]) => item), ['soon', 'refresher'])
  t.equal(deadlines.heapSize, 0, 'nothing left once all fired')
  deadlines.close()
})
