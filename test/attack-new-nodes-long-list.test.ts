import t from 'tap'
import { brokerOptions, brokerUrl, requireBroker, startBus } from './helpers/broker.js'

// Red-team attacks on `broker.url` as a list of nodes: a long list whose only
// live node is the last, a bare % in a password, amqps:// to a plain port.

const DEAD = 'amqp://guest:guest@127.0.0.1:1'

/** Milliseconds `start` took, and how it ended. */
async function timedStart (t: Parameters<typeof startBus>[0], options: Parameters<typeof startBus>[1]): Promise<{ ms: number, code: string | undefined }> {
  const began = Date.now()
  try {
    await startBus(t, options)
    return { ms: Date.now() - began, code: undefined }
  } catch (error) {
    return { ms: Date.now() - began, code: (error as { code?: string }).code ?? (error as Error).name }
  }
}

t.test('a long node list on the real broker', async (t) => {
  if (!await requireBroker(t)) return

  t.test('100 nodes, only the last alive: start either comes up or fails typed within publishTimeoutMs', async (t) => {
    const url = [...Array.from({ length: 99 }, () => DEAD), brokerUrl]
    const publishTimeoutMs = 4000
    const result = await timedStart(t, brokerOptions(t, { url, publishTimeoutMs }))
    t.comment(`100 nodes (99 dead duplicates, last live), backoff 50..500 ms: start ${result.code ?? 'up'} after ${result.ms} ms`)
    t.ok(result.code === undefined || result.code === 'FST_EVSOCK_BROKER_UNAVAILABLE', `typed outcome (${String(result.code)})`)
    t.ok(result.ms < publishTimeoutMs + 1000, `bounded: ${result.ms} ms`)
  })

  t.test('100 nodes, only the last alive: start reaches the live node within publishTimeoutMs (8 s)', async (t) => {
    const url = [...Array.from({ length: 99 }, () => DEAD), brokerUrl]
    const outcomes: string[] = []
    for (let i = 0; i < 3; i++) {
      const result = await timedStart(t, brokerOptions(t, { url, publishTimeoutMs: 8000 }))
      outcomes.push(`${result.code ?? 'up'} ${result.ms} ms`)
    }
    t.comment(`100 nodes, 3 starts: ${outcomes.join('; ')}`)
    t.ok(outcomes.every((outcome) => outcome.startsWith('up')), `every start reached the one live node (${outcomes.join('; ')})`)
  })

  t.test('a bare % in the password: start fails with the plugin\'s typed error, not a URIError', async (t) => {
    const live = new URL(brokerUrl)
    const result = await timedStart(t, brokerOptions(t, { url: [`amqp://guest:50%off@${live.host}`], publishTimeoutMs: 2000 }))
    t.equal(result.code, 'FST_EVSOCK_BROKER_UNAVAILABLE', `start ended with ${String(result.code)} after ${result.ms} ms`)
  })

  t.test('amqps:// to a plain AMQP port: a typed error, not a hang', async (t) => {
    const live = new URL(brokerUrl)
    const result = await timedStart(t, brokerOptions(t, { url: [`amqps://guest:guest@${live.host}`], publishTimeoutMs: 3000 }))
    t.comment(`amqps to plain port: ${String(result.code)} after ${result.ms} ms`)
    t.equal(result.code, 'FST_EVSOCK_BROKER_UNAVAILABLE')
    t.ok(result.ms < 4000, `bounded: ${result.ms} ms`)
  })
})
