import WebSocket from 'ws'
import type { TestServer } from './server.js'
import { within } from './wait.js'

export interface ChurnOptions {
  from: number
  count: number
  /** Cycles running at once. */
  parallel: number
  /** The two patterns cycle `n` subscribes to (its own, and a shared one). */
  patterns: (n: number) => [string, string]
}

/**
 * One client's life: open, get hello, subscribe both patterns, get both
 * oks, then close: cleanly for even `n`, by dropping the TCP connection
 * without a close frame for odd `n`.
 */
async function connectionCycle (server: TestServer, token: string, n: number, [own, shared]: [string, string]): Promise<void> {
  const ws = new WebSocket(server.url, [`bearer.${token}`, 'evsock.v1.json'])
  const cycle = new Promise<void>((resolve, reject) => {
    ws.on('message', (data: Buffer) => {
      const message = JSON.parse(data.toString()) as { op: string, id?: number }
      if (message.op === 'hello') {
        ws.send(JSON.stringify({ op: 'sub', id: 1, topic: own }))
        ws.send(JSON.stringify({ op: 'sub', id: 2, topic: shared }))
      } else if (message.op === 'ok' && message.id === 2) {
        if (n % 2 === 0) ws.close()
        else ws.terminate()
      } else if (message.op === 'error') {
        reject(new Error(JSON.stringify(message)))
      }
    })
    ws.once('close', () => resolve())
    ws.once('error', reject)
  })
  try {
    await within(cycle, { what: `connection cycle ${n} (hello, two oks, close)`, timeoutMs: 10_000 })
  } finally {
    ws.terminate()
  }
}

/** Runs cycles `from` to `from + count - 1`, `parallel` at a time. */
export async function churn (server: TestServer, token: string, { from, count, parallel, patterns }: ChurnOptions): Promise<void> {
  let next = from
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < from + count) {
      const n = next++
      await connectionCycle(server, token, n, patterns(n))
    }
  }))
}
