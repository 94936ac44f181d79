// Where a run's results go: the terminal, bench/results/<timestamp>.json,
// and bench/RESULTS.md. RESULTS.md holds one full-suite run (`npm run bench`)
// and, in a section of its own each, the latest run of each separate
// scenario (`npm run bench -- history`, `npm run bench -- cluster`); each run
// rewrites its own part and keeps the others. Quick runs and runs of other
// scenario lists only leave their JSON.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { describe, type Machine } from './machine.js'
import { markdown, targetsTable } from './table.js'
import { SEPARATE, SUITE, type BenchArgs } from './args.js'
import type { ScenarioResult } from './results.js'

export interface Run {
  started: string
  seconds: number
  machine: Machine
  args: BenchArgs
  results: Partial<Record<string, ScenarioResult>>
}

const RESULTS = new URL('../RESULTS.md', import.meta.url)

type Section = typeof SEPARATE[number]
/** A part of RESULTS.md: the suite's, at the top, or a separate scenario's section. */
type Part = 'suite' | Section

const heading = (section: Section): string => `## ${section[0]!.toUpperCase()}${section.slice(1)} (\`npm run bench -- ${section}\`)`

/** Which part of RESULTS.md this run rewrites, if any. */
export function part (args: BenchArgs): Part | undefined {
  if (args.quick) return undefined
  if (args.scenarios.length === SUITE.length && SUITE.every((name) => args.scenarios.includes(name))) return 'suite'
  const [only] = args.scenarios
  if (args.scenarios.length === 1 && (SEPARATE as readonly string[]).includes(only!)) return only as Section
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

/** What each section's run measured, after the line that dates it. */
const ABOUT: Record<Section, string[]> = {
  history: [
    'the live path with history off and on, on both buses, and the rate of replays. "A" is the design built (every',
    'instance reads the history stream); "B" is today\'s binding-routed path with a stream bound beside it that',
    'nobody reads live, the live path of the design not built. The RabbitMQ replays read the newest events from',
    'the instance\'s memory (docs/rabbitmq.md, history stream), except the row `amqp (stream)`: an instance',
    'started after the events were published, whose replay reads the stream itself.'
  ],
  cluster: [
    'the plugin on two instances on the machine\'s single node beside the same on the local three-node cluster',
    '(scripts/rabbitmq-cluster.sh: three RabbitMQ nodes on this machine, sharing its 2 cores with the servers,',
    'the load generators and the single node), each instance on a node of its own with a quorum instance queue;',
    'and what one node accepts with publisher confirms, per queue type. Ratios are cluster / single node, taken',
    'round by round. docs/deploy-scale.md builds its capacity model on these tables.'
  ]
}

function sectionText (section: Section, run: Run): string {
  return [
    heading(section),
    '',
    `A separate run, ${run.started}, ${run.seconds.toFixed(0)} s, on ${run.machine.cpu}, ${run.machine.cores} cores (load average ${run.machine.load.toFixed(2)} at its start):`,
    ...ABOUT[section],
    '',
    render(run),
    ''
  ].join('\n')
}

/** The suite's part of RESULTS.md and each section, as found in `text`. */
function split (text: string): { suite: string, sections: Partial<Record<Section, string>> } {
  const found = SEPARATE.map((section) => ({ section, at: text.indexOf(`\n${heading(section)}\n`) }))
    .filter(({ at }) => at !== -1)
    .sort((a, b) => a.at - b.at)
  const sections: Partial<Record<Section, string>> = {}
  found.forEach(({ section, at }, i) => { sections[section] = text.slice(at + 1, found[i + 1]?.at) })
  return { suite: found.length === 0 ? text : text.slice(0, found[0]!.at + 1), sections }
}

/** RESULTS.md with this run's part rewritten and the others kept, the sections in SEPARATE's order. */
function results (run: Run, which: Part): string {
  const { suite, sections } = split(existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : '')
  if (which !== 'suite') sections[which] = sectionText(which, run)
  const parts = [which === 'suite' ? suiteText(run) : suite, ...SEPARATE.map((section) => sections[section] ?? '')]
  return parts.map((text) => text.trimEnd()).filter((text) => text !== '').join('\n\n') + '\n'
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
