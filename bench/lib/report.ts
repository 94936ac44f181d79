// Where a run's results go: the terminal, bench/results/<timestamp>.json,
// and bench/RESULTS.md. RESULTS.md holds one full-suite run (`npm run bench`)
// and, in its History section, the latest history run (`npm run bench --
// history`); each rewrites its own part and keeps the other. Quick runs and
// runs of other scenario lists only leave their JSON.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { describe, type Machine } from './machine.js'
import { markdown, targetsTable } from './table.js'
import { SUITE, type BenchArgs } from './args.js'
import type { ScenarioResult } from './results.js'

export interface Run {
  started: string
  seconds: number
  machine: Machine
  args: BenchArgs
  results: Partial<Record<string, ScenarioResult>>
}

const RESULTS = new URL('../RESULTS.md', import.meta.url)
const HISTORY_HEADING = '## History (`npm run bench -- history`)'

/** Which part of RESULTS.md this run rewrites, if any. */
export function part (args: BenchArgs): 'suite' | 'history' | undefined {
  if (args.quick) return undefined
  if (args.scenarios.length === SUITE.length && SUITE.every((name) => args.scenarios.includes(name))) return 'suite'
  if (args.scenarios.length === 1 && args.scenarios[0] === 'history') return 'history'
  return undefined
}

export function render (run: Run): string {
  const results = Object.values(run.results).filter((r) => r !== undefined)
  const tables = results.flatMap((r) => r.tables)
  const targets = results.flatMap((r) => r.targets)
  return [...tables, ...(targets.length > 0 ? [targetsTable(targets)] : [])].map(markdown).join('\n\n')
}

function suiteText (run: Run): string {
  return [
    '# Benchmark results (latest run)',
    '',
    `Run ${run.started}, ${run.seconds.toFixed(0)} s: \`npm run bench\` (the full suite: ${SUITE.join(', ')}; ` +
      `${run.args.rounds} rounds of each point, ${run.args.seconds} s windows for throughput, ${run.args.latencySeconds} s for fixed rates).`,
    '',
    `Machine: ${describe(run.machine)}.`,
    '',
    'Servers run pinned to core 0, load generators to core 1 (taskset); brokers are not pinned.',
    'Frames/s are counted at the clients; server µs/frame is the server processes\' CPU time (user + system) over the same window.',
    '',
    render(run),
    ''
  ].join('\n')
}

function historyText (run: Run): string {
  return [
    HISTORY_HEADING,
    '',
    `A separate run, ${run.started}, ${run.seconds.toFixed(0)} s, on the same machine (load average ${run.machine.load.toFixed(2)} at its start):`,
    'the live path with history off and on, on both buses, and the rate of replays. "A" is the design built (every',
    'instance reads the history stream); "B" is today\'s binding-routed path with a stream bound beside it that',
    'nobody reads live, the live path of the design not built. The RabbitMQ replays read the newest events from',
    'the instance\'s memory (docs/rabbitmq.md, history stream), except the row `amqp (stream)`: an instance',
    'started after the events were published, whose replay reads the stream itself.',
    '',
    render(run),
    ''
  ].join('\n')
}

/** RESULTS.md with this run's part rewritten and the other kept. */
function results (run: Run, which: 'suite' | 'history'): string {
  const old = existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : ''
  const at = old.indexOf(`\n${HISTORY_HEADING}\n`)
  const suite = at === -1 ? old : old.slice(0, at + 1)
  const history = at === -1 ? '' : old.slice(at + 1)
  return which === 'suite'
    ? suiteText(run) + (history === '' ? '' : '\n' + history)
    : suite.trimEnd() + '\n\n' + historyText(run)
}

/** Saves the run's JSON, and its part of RESULTS.md (see `part`); returns what it wrote. */
export function save (run: Run): string[] {
  const dir = new URL('../results/', import.meta.url)
  mkdirSync(dir, { recursive: true })
  const file = new URL(`${run.started.replace(/[:.]/g, '-')}.json`, dir)
  writeFileSync(file, JSON.stringify(run, null, 2) + '\n')
  const which = part(run.args)
  if (which === undefined) return [file.pathname]
  writeFileSync(RESULTS, results(run, which))
  return [file.pathname, RESULTS.pathname]
}
