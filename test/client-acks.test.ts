import t from 'tap'
import { AckTracker } from '../lib/client/acks.js'
import { backoffDelay, saturatedAttempt } from '../lib/client/backoff.js'
import { waitFor } from './helpers/wait.js'

t.test('acks once half the window is processed', async (t) => {
  const sent: number[] = []
  const acks = new AckTracker(8, 10_000, (seq) => sent.push(seq))
  for (let seq = 1; seq <= 9; seq++) acks.processed(seq)
  t.same(sent, [4, 8])
  acks.stop()
})

t.test('acks the tail after the idle delay', async (t) => {
  const sent: number[] = []
  const started = performance.now()
  const acks = new AckTracker(64, 20, (seq) => sent.push(seq))
  acks.processed(1)
  acks.processed(2)
  t.same(sent, [])
  await waitFor(() => sent.length > 0, { what: 'the idle ack', timeoutMs: 2000, intervalMs: 1 })
  // Time is what is tested here: not before the idle delay (timers may fire up to a millisecond early).
  t.ok(performance.now() - started >= 19, 'after the idle delay')
  t.same(sent, [2])
})

t.test('only acks the contiguous run when handlers finish out of order', async (t) => {
  const sent: number[] = []
  const acks = new AckTracker(4, 10_000, (seq) => sent.push(seq))
  acks.processed(2)
  acks.processed(3)
  t.same(sent, [], 'seq 1 still running')
  acks.processed(1)
  t.same(sent, [3])
  acks.stop()
})

t.test('a window of 1 acks every event', async (t) => {
  const sent: number[] = []
  const acks = new AckTracker(1, 10_000, (seq) => sent.push(seq))
  acks.processed(1)
  acks.processed(2)
  t.same(sent, [1, 2])
})

t.test('a stopped tracker sends nothing', async (t) => {
  const sent: number[] = []
  const acks = new AckTracker(64, 10, (seq) => sent.push(seq))
  acks.processed(1)
  acks.stop()
  acks.processed(2)
  // The sentinel: a tracker with the same idle delay, started after. Timers
  // of one duration fire in the order they were set, so once its ack is sent
  // the stopped tracker's would have been too.
  const control: number[] = []
  new AckTracker(64, 10, (seq) => control.push(seq)).processed(1)
  await waitFor(() => control.length > 0, { what: 'the control tracker\'s idle ack', timeoutMs: 2000, intervalMs: 1 })
  t.same(sent, [])
})

t.test('backoff: exponential ceiling, full jitter, capped', async (t) => {
  const options = { initialDelayMs: 100, maxDelayMs: 1000 }
  t.equal(backoffDelay(0, options, () => 0.999), 99)
  t.equal(backoffDelay(3, options, () => 0.5), 400)
  t.equal(backoffDelay(10, options, () => 0.5), 500, 'ceiling capped at maxDelayMs')
  t.equal(backoffDelay(2, options, () => 0), 0, 'full jitter reaches zero')
  t.equal(saturatedAttempt(options), 4)
  t.equal(backoffDelay(saturatedAttempt(options), options, () => 0.999), 999)
})
