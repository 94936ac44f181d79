// `npm run bench`: runs the scenarios (all, or those named), prints the
// tables, and saves the run (bench/results/*.json, bench/RESULTS.md).
import { benchArgs, type ScenarioName } from './lib/args.js'
import { machine } from './lib/machine.js'
import { render, save, type Run } from './lib/report.js'
import { markdown } from './lib/table.js'
import type { Context, ScenarioResult } from './lib/results.js'
import { fanout } from './scenarios/fanout.js'

const scenarios: Partial<Record<ScenarioName, (context: Context) => Promise<ScenarioResult>>> = {
  fanout
}

const args = benchArgs(process.argv.slice(2))
const started = new Date()
const context: Context = { args, fanout: new Map(), latencyP99: new Map() }
const run: Run = { started: started.toISOString(), seconds: 0, machine: machine(), args, results: {} }

for (const name of args.scenarios) {
  const scenario = scenarios[name]
  if (scenario === undefined) continue
  const began = performance.now()
  const result = await scenario(context)
  run.results[name] = result
  console.log(result.tables.map(markdown).join('\n\n'))
  console.log(`(${name}: ${((performance.now() - began) / 1000).toFixed(1)} s)\n`)
}
run.seconds = (Date.now() - started.getTime()) / 1000
console.log(render(run))
console.log(`\nsaved ${save(run)}`)
