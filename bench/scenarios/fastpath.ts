// The fast path, step by step, measured in this process on the plugin's own
// modules: each row puts the plugin's way beside the obvious one it replaced.
// The write step (one write per frame against one per socket per turn) is the
// fan-out table's ws-naive / ws-coalesced / evsock rows.
import { randomUUID } from 'node:crypto'
import { OutboundEvent } from '../../lib/codec.js'
import { writeEventFrame } from '../../lib/framers.js'
import { TopicIndex } from '../../lib/client/topic-index.js'
import { eventData } from '../lib/payload.js'
import type { Cell, Context, ScenarioResult } from '../lib/results.js'

const SOCKETS = 1000
const PATTERNS = 10_000

/** Nanoseconds per call of `work`, after a warm-up, over about `ms` milliseconds. */
function nsPer (work: () => void, ms: number): number {
  for (let i = 0; i < 50; i++) work()
  let calls = 0
  const started = process.hrtime.bigint()
  const until = started + BigInt(ms * 1e6)
  let now = started
  while (now < until) {
    for (let i = 0; i < 100; i++) work()
    calls += 100
    now = process.hrtime.bigint()
  }
  return Number(now - started) / calls
}

function encodingRows (size: number, ms: number): Cell[][] {
  const topic = 'orders.created'
  const data = eventData(size)
  const payload = Buffer.from(JSON.stringify(data))
  // Before: each socket serialises the whole message, envelope and data, itself.
  const perSocket = nsPer(() => {
    for (let seq = 1; seq <= SOCKETS; seq++) Buffer.from(JSON.stringify({ op: 'event', seq, topic, id: 'x', data }))
  }, ms) / SOCKETS
  // After: the body is encoded once per event; each socket writes header, envelope and body in place.
  const batch = Buffer.allocUnsafe(SOCKETS * (payload.length + 128))
  const once = nsPer(() => {
    const event = new OutboundEvent({ id: randomUUID(), topic, time: 0, payload })
    let at = 0
    for (let seq = 1; seq <= SOCKETS; seq++) at = writeEventFrame(batch, at, event, 'json', seq)
  }, ms) / SOCKETS
  return [
    [`encode, ${size} B`, 'JSON.stringify per socket', perSocket.toFixed(0), 'body once per event, envelope per socket', once.toFixed(0), (perSocket / once).toFixed(1)]
  ]
}

function matchingRow (ms: number): Cell[] {
  const patterns = Array.from({ length: PATTERNS }, (_, i) => i % 2 === 0 ? `user.${i}.#` : `user.${i}.*`)
  // Before: every pattern tested against every topic.
  const regexes = patterns.map((pattern) => new RegExp(`^${pattern.replace(/\./g, '\\.').replace(/\\\.#$/, '(\\..+)?').replace(/\*/g, '[^.]+')}$`))
  const index = new TopicIndex<object>()
  for (const pattern of patterns) index.add(pattern, {})
  let n = 0
  const topic = (): string => `user.${(n++ * 7919) % PATTERNS}.inbox`
  let hits = 0
  const linear = nsPer(() => { const t = topic(); for (const regex of regexes) if (regex.test(t)) hits++ }, ms)
  const trie = nsPer(() => { index.match(topic(), () => { hits++ }) }, ms)
  if (hits === 0) throw new Error('no topic matched: the comparison would be meaningless')
  return [`match, ${PATTERNS.toLocaleString('en-US')} patterns`, 'test every pattern', linear.toFixed(0), 'trie of words', trie.toFixed(0), (linear / trie).toFixed(0)]
}

export async function fastpath (context: Context): Promise<ScenarioResult> {
  const ms = Math.max(200, context.args.seconds * 1000)
  const rows: Cell[][] = [
    ...context.args.sizes.flatMap((size) => encodingRows(size, ms)),
    matchingRow(ms)
  ]
  return {
    tables: [{
      title: `Fast path, in process (${SOCKETS.toLocaleString('en-US')} sockets per event; ns per frame for encoding, per event for matching)`,
      columns: ['step', 'before', 'ns', 'after (this plugin)', 'ns', 'speed-up'],
      rows
    }],
    targets: []
  }
}
