// Request/response over the IPC channel between the orchestrator and the
// processes it starts (servers and load generators). Each process is pinned
// to one core with taskset, so the server and the load generator do not
// compete for the same core and the server's CPU figures are its own.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

type Handler = (args: never) => unknown

interface Request { id: number, method: string, args: unknown }
interface Response { id: number, result?: unknown, error?: string }

/** Child side: answers the orchestrator's calls with `handlers`. */
export function serve (handlers: Record<string, Handler>): void {
  process.on('message', (message: Request) => {
    const handler = handlers[message.method]
    const reply = (response: Omit<Response, 'id'>): void => { process.send?.({ id: message.id, ...response }) }
    if (handler === undefined) return reply({ error: `unknown method ${message.method}` })
    Promise.resolve()
      .then(() => handler(message.args as never))
      .then((result) => reply({ result }), (err: Error) => reply({ error: err.stack ?? String(err) }))
  })
  // The orchestrator disconnects (or dies): nothing is left behind.
  process.on('disconnect', () => process.exit(0))
}

const hasTaskset = spawnSync('taskset', ['-V']).status === 0

/** Orchestrator side: one child process and its pending calls. */
export class Child {
  private nextId = 0
  private readonly pending = new Map<number, { resolve: (value: unknown) => void, reject: (err: Error) => void }>()
  private readonly process: ChildProcess

  /** Starts `script` (a .ts module under bench/) with tsx, on `core` when taskset is there. */
  constructor (readonly label: string, script: URL, core: number) {
    const node = [process.execPath, '--expose-gc', '--max-old-space-size=8192', '--import', 'tsx', fileURLToPath(script)]
    const pinned = hasTaskset ? ['taskset', '-c', String(core), ...node] : node
    // Raise the open-file limit to the hard limit where the shell allows it:
    // thousands of sockets per process.
    this.process = spawn('sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'sh', ...pinned], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced'
    })
    this.process.on('message', (message: Response) => {
      const call = this.pending.get(message.id)
      if (call === undefined) return
      this.pending.delete(message.id)
      if (message.error !== undefined) call.reject(new Error(`${label}: ${message.error}`))
      else call.resolve(message.result)
    })
    this.process.on('exit', (code, signal) => {
      for (const call of this.pending.values()) call.reject(new Error(`${label} exited (${code ?? signal})`))
      this.pending.clear()
    })
  }

  call<T = void> (method: string, args?: unknown): Promise<T> {
    const id = this.nextId++
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject })
      this.process.send({ id, method, args })
    })
  }

  /** Ends the process and waits for it to go. */
  async stop (): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return
    const exited = new Promise((resolve) => this.process.once('exit', resolve))
    this.process.disconnect()
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(timer)
  }
}
