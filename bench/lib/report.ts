// Where a run's results go: the terminal, bench/results/<timestamp>.json,
// and bench/RESULTS.md (the latest run).
import { mkdirSync, writeFileSync } from 'node:fs'
import { describe, type Machine } from './machine.js'
import { markdown, targetsTable } from './table.js'
import { SCENARIOS, type BenchArgs } from './args.js'
import type { ScenarioResult } from './results.js'

export interface Run {
  started: string
  seconds: number
  machine: Machine
  args: BenchArgs
  results: Partial<Record<string, ScenarioResult>>
}

export function render (run: Run): string {
  const results = Object.values(run.results).filter((r) => r !== undefined)
  const tables = results.flatMap((r) => r.tables)
  const targets = results.flatMap((r) => r.targets)
  return [...tables, ...(targets.length > 0 ? [targetsTable(targets)] : [])].map(markdown).join('\n\n')
}

export function save (run: Run): string {
  const dir = new URL('../results/', import.meta.url)
  mkdirSync(dir, { recursive: true })
  const file = new URL(`${run.started.replace(/[:.]/g, '-')}.json`, dir)
  writeFileSync(file, JSON.stringify(run, null, 2) + '\n')
  writeFileSync(new URL('../RESULTS.md', import.meta.url), [
    '# Benchmark results (latest run)',
    '',
    `Run ${run.started}, ${run.seconds.toFixed(0)} s: \`npm run bench${run.args.scenarios.length === SCENARIOS.length ? '' : ' -- ' + run.args.scenarios.join(' ')}\`.`,
    '',
    `Machine: ${describe(run.machine)}.`,
    '',
    'Servers run pinned to core 0, load generators to core 1 (taskset); brokers are not pinned.',
    'Frames/s are counted at the clients; server µs/frame is the server processes\' CPU time (user + system) over the same window.',
    '',
    render(run),
    ''
  ].join('\n'))
  return file.pathname
}
