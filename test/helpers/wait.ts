import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { TestClient } from './server.js'

// Bounded waits for the tests: a test that waits for something that never
// happens must fail, saying what it waited for, instead of hanging until
// tap's own timeout (or passing because a sleep happened to be long enough).

export interface WaitOptions {
  /** What is awaited, for the failure message ("timed out after N ms waiting for <what>"). */
  what: string
  timeoutMs?: number
  /** Pause between two checks. */
  intervalMs?: number
  /** Appended to the failure message: the state that did not match. */
  detail?: () => string
}

/** Resolves once `condition` holds (it may be async); rejects after `timeoutMs` with `what`. */
export async function waitFor (condition: () => boolean | Promise<boolean>, { what, timeoutMs = 10_000, intervalMs = 10, detail }: WaitOptions): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail === undefined ? '' : `: ${detail()}`}`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

/** Settles like `promise`, or rejects after `timeoutMs` with `what`. */
export async function within<T> (promise: Promise<T>, { what, timeoutMs = 10_000 }: { what: string, timeoutMs?: number }): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

let syncId = 900_000_000

/**
 * A round trip on `client`'s connection: an `unsub` of a pattern it never
 * held, answered `ok` with no other effect. Frames on one connection are
 * ordered, so once the answer is in, everything the server had written
 * before it handled the request is in too: where no event can serve as a
 * sentinel (behind a full window), this one proves an absence.
 */
export async function roundTrip (client: TestClient): Promise<void> {
  const id = syncId++
  client.send({ op: 'unsub', id, topic: 'never.held.sentinel' })
  await client.next((message) => message.id === id && message.op === 'ok', { timeout: 5000 })
}

export interface ChildRun {
  /** Everything the child wrote to stdout so far. */
  readonly stdout: () => string
  /** Resolves with the first stdout line, parsed as JSON. */
  readonly firstLine: Promise<unknown>
  /** Resolves with the exit code once the child exits; rejects if it is still running after `timeoutMs` from the call. */
  exited: (what: string, timeoutMs: number) => Promise<number | null>
  readonly signal: (name: NodeJS.Signals) => void
}

/**
 * Runs an ESM TypeScript `script` in a child Node process from the project
 * root (so that `./lib/index.ts` resolves), killed when the test ends if it
 * is still alive. For what only a process can show: that it exits by
 * itself, which means no handle was left behind.
 */
export function runScript (t: { teardown: (fn: () => void) => void }, script: string): ChildRun {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => { out += chunk })
  const exit = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  const firstLine = waitFor(() => out.includes('\n') || child.exitCode !== null, { what: 'the child\'s first line', timeoutMs: 20_000 })
    .then(() => {
      if (!out.includes('\n')) throw new Error(`the child exited (code ${child.exitCode}) before writing a line`)
      return JSON.parse(out.slice(0, out.indexOf('\n'))) as unknown
    })
  // Rejections reach whoever awaits it; a test that never does is not left with an unhandled one.
  firstLine.catch(() => {})
  return {
    stdout: () => out,
    firstLine,
    exited: async (what, timeoutMs) => (await within(exit, { what, timeoutMs }))[0],
    signal: (name) => { child.kill(name) }
  }
}
