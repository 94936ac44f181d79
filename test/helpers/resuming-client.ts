import type { Test } from 'tap'
import WebSocket from 'ws'
import { connect, type EventSocketClient, type EventSocketClientError, type Format, type ReceivedEvent, type ResumeResult } from '../../lib/client/index.js'
import { deliveryReport, type Got, type ReportOptions } from './delivery-check.js'
import type { Published, Stamp } from './publisher.js'
import { waitFor, within } from './wait.js'

// The bundled client as the history tests run it: through the proxy, with
// wildcard subscriptions, recording what each subscription's handler got,
// every resume the client reported and every close it went through.

export interface RecordingClient {
  client: EventSocketClient
  patterns: string[]
  /** Per pattern, what its handler got, in order. */
  got: Map<string, Got[]>
  resumes: ResumeResult[]
  disconnects: Array<{ code: number, reason: string }>
  errors: EventSocketClientError[]
  /** Waits until a handler got the last event of each of `publishers` publishers (every earlier event is then in too, or lost). */
  sentinels: (publishers: number, timeoutMs?: number) => Promise<void>
  /** deliveryReport for every pattern, '' when all are complete. */
  report: (published: Published[][], options?: ReportOptions) => string
  /** One line on where the client stands (events per pattern, closes, resumes, errors), for the message of a wait that timed out. */
  describe: () => string
}

export interface RecordingClientOptions {
  url: string
  token: string
  /** At least one must match one of the publishers' last events (SENTINEL_TOPIC by default). */
  patterns: string[]
  format?: Format
  /** Called by every handler, after recording; what it returns is what the handler returns (a promise to stall it). */
  onEvent?: (pattern: string, stamp: Stamp) => void | Promise<void>
}

/** Connects the bundled client, subscribes every pattern and waits for the server to accept them; closed when the test ends. */
export async function recordingClient (t: Test, { url, token, patterns, format = 'json', onEvent }: RecordingClientOptions): Promise<RecordingClient> {
  // Fast reconnects: the tests measure recovery, not the backoff.
  const client = connect({ url, token, format, WebSocket, reconnect: { initialDelayMs: 50, maxDelayMs: 500 } })
  t.teardown(() => within(client.close(), { what: 'the client to close', timeoutMs: 5000 }))
  const got = new Map(patterns.map((pattern) => [pattern, [] as Got[]]))
  /** The publishers one of whose last events arrived: all they published before it is in too, unless lost. */
  const lasts = new Set<number>()
  const resumes: ResumeResult[] = []
  const disconnects: Array<{ code: number, reason: string }> = []
  const errors: EventSocketClientError[] = []
  client.on('disconnect', (close) => { disconnects.push(close) })
  client.on('error', (error) => { errors.push(error) })
  client.on('resume', (resume) => { resumes.push(resume) })
  const subscriptions = patterns.map((pattern) => {
    const record = got.get(pattern) as Got[]
    return client.subscribe(pattern, (event: ReceivedEvent) => {
      const stamp = event.data as Stamp
      record.push({ p: stamp.p, n: stamp.n, topic: event.topic })
      if (stamp.last === true) lasts.add(stamp.p)
      return onEvent?.(pattern, stamp)
    })
  })
  await within(Promise.all(subscriptions.map((subscription) => subscription.ready)), { what: `the subscriptions ${patterns.join(' ')}` })
  const describe = (): string => [
    `state ${client.state}`,
    `got ${[...got].map(([pattern, record]) => `${pattern}: ${record.length}`).join(', ')}`,
    `closes ${disconnects.map((close) => close.code).join(' ')}`,
    `resumes ${resumes.map((resume) => `${resume.pattern} ${resume.recovered}`).join(', ')}`,
    `errors ${errors.map((error) => error.message).join('; ')}`
  ].join('; ')
  return {
    client,
    patterns,
    got,
    resumes,
    disconnects,
    errors,
    sentinels: (publishers, timeoutMs = 20_000) => waitFor(() => lasts.size === publishers, {
      what: `the last event of all ${publishers} publishers at the client (${patterns.join(' ')})`,
      timeoutMs,
      detail: () => `${lasts.size} arrived; ${describe()}`
    }),
    describe,
    report: (published, options) => patterns.map((pattern) => deliveryReport(pattern, published, got.get(pattern) ?? [], options)).filter((report) => report !== '').join('\n')
  }
}
