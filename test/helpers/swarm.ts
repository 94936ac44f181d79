import type { Test } from 'tap'
import type { SwarmClientReport, SwarmConfig, SwarmProgress } from '../fixtures/client-swarm.js'
import { runScript, waitFor } from './wait.js'

// test/fixtures/client-swarm.ts in a child process, and its lines read back.

export interface Swarm {
  /** The latest counts the swarm wrote. */
  progress: () => SwarmProgress
  /** Waits until `condition` holds for the swarm's counts. */
  until: (condition: (progress: SwarmProgress) => boolean, what: string, timeoutMs: number) => Promise<void>
  /** Switches the swarm's proxy to the next upstream; resolves once it has. */
  nextUpstream: () => Promise<void>
  /** Waits for the final report (every client got the last event of every publisher), then for the swarm to exit. */
  report: (timeoutMs: number) => Promise<SwarmClientReport[]>
}

export async function startSwarm (t: Test, config: SwarmConfig, timeoutMs = 60_000): Promise<Swarm> {
  const child = runScript(t, `
    import { runSwarm } from './test/fixtures/client-swarm.ts'
    await runSwarm(${JSON.stringify(config)})
  `)
  // Complete lines only: the report is long, and may be read while it is still being written.
  const lines = (): Array<Record<string, unknown>> => {
    const out = child.stdout()
    return out.slice(0, out.lastIndexOf('\n') + 1).split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as Record<string, unknown>)
  }
  await waitFor(() => lines().some((line) => 'ready' in line), { what: `${config.count} clients of the swarm to connect and subscribe`, timeoutMs })
  const progress = (): SwarmProgress => (lines().filter((line) => 'progress' in line).at(-1)?.progress as SwarmProgress | undefined) ?? { open: 0, states: {}, disconnected: 0, resumed: 0, unrecovered: 0, done: 0, errors: {}, closes: {}, failures: {}, lagMs: 0 }
  let switches = 0
  return {
    progress,
    nextUpstream: async () => {
      const expected = ++switches
      child.signal('SIGUSR2')
      await waitFor(() => lines().some((line) => line.upstream === expected), { what: `the swarm's proxy to switch to upstream ${expected}` })
    },
    until: (condition, what, timeout) => waitFor(() => condition(progress()), { what, timeoutMs: timeout, intervalMs: 50, detail: () => JSON.stringify(progress()) }),
    report: async (timeout) => {
      await waitFor(() => lines().some((line) => 'report' in line), { what: 'the swarm\'s report (every client got every publisher\'s last event)', timeoutMs: timeout, intervalMs: 50, detail: () => JSON.stringify(progress()) })
      const report = lines().find((line) => 'report' in line)?.report as SwarmClientReport[]
      await child.exited('the swarm to close its clients and exit', 10_000)
      return report
    }
  }
}
