import t from 'tap'
import { QueueWindow } from '../lib/queue-window.js'

// The FIFO under the pending queue and both histories' in-memory logs: its
// sequence numbers must survive the compactions that slice off the drained
// prefix (every 1,025 shifts or so), or histories would hand out the wrong
// message for an offset.

t.test('a queue window keeps every item under its sequence number across many compactions', async (t) => {
  const window = new QueueWindow<number>()
  t.same([window.length, window.first, window.end, window.oldest, window.shift()], [0, 0, 0, undefined, undefined], 'empty')
  const total = 20_000
  let shifted = 0
  let wrong = 0
  for (let i = 0; i < total; i++) {
    window.push(i * 10)
    // Keep about 300 items: many more shifts than the compaction threshold, so it compacts often.
    if (window.length > 300) {
      const item = window.shift()
      if (item !== shifted * 10) wrong++
      shifted++
    }
    // Every kept item is still found by its sequence number, and nothing outside them.
    if (i % 997 === 0) {
      for (let seq = window.first; seq < window.end; seq++) if (window.at(seq) !== seq * 10) wrong++
    }
  }
  t.equal(wrong, 0, 'shifted in order, and at(seq) found the item pushed under seq every time')
  t.same([window.first, window.end, window.length], [shifted, total, total - shifted], 'first and end count every push and shift')
  t.equal(window.oldest, shifted * 10, 'the oldest is the next to shift')
  t.equal(window.at(shifted - 1), undefined, 'a shifted item is gone')
  t.equal(window.at(total), undefined, 'nothing under the next sequence number yet')
  t.equal(window.search((item) => item < (total - 100) * 10), total - 100, 'the binary search answers in sequence numbers')
  t.equal(window.search((item) => item < 0), window.first, 'a search before every item answers the first')
  t.equal(window.search(() => true), total, 'a search past every item answers the end')
})

t.test('a queue window drained to empty keeps counting from where it was', async (t) => {
  const window = new QueueWindow<string>()
  for (let i = 0; i < 3000; i++) window.push(`m${i}`)
  let wrong = 0
  for (let i = 0; i < 3000; i++) if (window.shift() !== `m${i}`) wrong++
  t.equal(wrong, 0, 'shifted in order')
  t.same([window.length, window.first, window.end], [0, 3000, 3000], 'empty, first at end')
  window.push('next')
  t.equal(window.at(3000), 'next', 'the next push gets the next sequence number')
})
