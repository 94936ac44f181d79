import t, { type Test } from 'tap'
import { requireBroker } from './helpers/broker.js'
import { clusterOptions, oldestRetained, startInstance } from './helpers/instance.js'
import type { Stamp } from './helpers/publisher.js'
import { recordingClient } from './helpers/resuming-client.js'
import { delay, startServer } from './helpers/server.js'
import { startTcpProxy } from './helpers/tcp-proxy.js'
import { waitFor } from './helpers/wait.js'

// Retention exceeded (docs/protocol.md section 6): a client away for longer
// than the history keeps resumes with a `since` the stream no longer holds.
// The server answers recovered: false, and the client goes on live. Once with
// other traffic going on while it comes back, once on a quiet stream.

const MAX_BYTES = 64 * 1024
const PAD = 'x'.repeat(2048)

async function awayPastRetention (t: Test, { traffic }: { traffic: boolean }): Promise<void> {
  const options = clusterOptions(t, { history: { maxBytes: MAX_BYTES } })
  const stream = `${options.broker?.exchange as string}.history`
  const [publishing, instance] = await Promise.all([startServer(t, options), startInstance(t, options)])
  const proxy = await startTcpProxy(t, instance.port)
  const client = await recordingClient(t, { url: proxy.url, token: publishing.sign({ sub: 'away', role: 'admin' }), patterns: ['orders.#'] })
  const got = client.got.get('orders.#') ?? []
  let n = 0
  const publish = async (count: number, extra: Partial<Stamp> & { pad?: string } = {}): Promise<number[]> => {
    const numbers = Array.from({ length: count }, () => n++)
    // In order, as one publisher; not waiting for one confirm before the next publish.
    await Promise.all(numbers.map((each) => publishing.app.publish(`orders.${each % 10}.created`, { p: 0, n: each, at: Date.now(), ...extra })))
    return numbers
  }
  if (traffic) {
    // Events the client's pattern does not match, all along: the stream is never quiet.
    const stopping = new AbortController()
    const other = (async () => {
      while (!stopping.signal.aborted) {
        await publishing.app.publish('stock.x', { other: true })
        await delay(20)
      }
    })()
    t.teardown(async () => { stopping.abort(); await other.catch(() => {}) })
  }

  const before = await publish(20)
  await waitFor(() => got.length === before.length, { what: 'the events before the client went away' })
  proxy.refuse(true)
  proxy.cutAll()
  await waitFor(() => client.disconnects.length === 1, { what: 'the client to notice the cut' })

  // Until retention dropped the client's last position: the oldest event the stream holds was published after the cut.
  const away: number[] = []
  const lastBefore = before.at(-1) as number
  await waitFor(async () => {
    away.push(...await publish(Math.ceil(2 * MAX_BYTES / PAD.length), { pad: PAD }))
    const oldest = await oldestRetained(stream) as Stamp | undefined
    return oldest !== undefined && oldest.n > lastBefore
  }, { what: 'retention to drop the client\'s last position', timeoutMs: 30_000, intervalMs: 0, detail: () => `${away.length} events of ${PAD.length} bytes published` })
  proxy.refuse(false)
  // A resume may first be answered recovered (the broker applies retention lazily) and its replay then
  // find the events gone: the server closes with 1013 and the next resume is not recovered.
  await waitFor(() => client.resumes.some((resume) => !resume.recovered), { what: 'a resume not recovered, after the client came back', timeoutMs: 15_000, detail: client.describe })
  t.same(client.resumes.at(-1), { pattern: 'orders.#', recovered: false }, 'the resume is reported not recovered')
  t.same(client.disconnects.slice(1).filter((close) => close.code !== 1013), [], 'any close after the cut is 1013: retention dropped what a replay had to read')

  const [sentinel] = await publish(1, { last: true })
  await client.sentinels(1)
  t.equal(got.at(-1)?.n, sentinel, 'an event published after the resume is delivered live')
  t.notOk(got.some((event) => event.n === away[0]), 'the oldest event published while away, dropped by retention, was not delivered')
  t.same(got.slice(0, before.length).map((event) => event.n), before, 'the events before the cut were delivered once, in order')
  const numbers = got.map((event) => event.n)
  t.same(numbers, [...new Set(numbers)].sort((a, b) => a - b), 'no event twice, none out of order')
}

if (await requireBroker(t)) {
  t.test('a client away past retention, other traffic going on: it resumes with recovered: false, then gets live events', (t) => awayPastRetention(t, { traffic: true }))
  t.test('a client away past retention, the stream quiet when it comes back: it resumes with recovered: false, then gets live events', (t) => awayPastRetention(t, { traffic: false }))
}
