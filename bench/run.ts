// `npm run bench`: runs the scenarios (all, or those named), prints the
// tables, and saves the run (bench/results/*.json, bench/RESULTS.md).
import { benchArgs, type ScenarioName } from './lib/args.js'
import { machine } from './lib/machine.js'
import { part, render, save, type Run } from './lib/report.js'
import { markdown } from './lib/table.js'
import { atMost, type Context, type ScenarioResult, type Target } from './lib/results.js'
import { cluster } from './scenarios/cluster.js'
import { fanout } from './scenarios/fanout.js'
import { fastpath } from './scenarios/fastpath.js'
import { handshake } from './scenarios/handshake.js'
import { history } from './scenarios/history.js'
import { latency } from './scenarios/latency.js'
import { memory } from './scenarios/memory.js'
import { slow } from './scenarios/slow.js'
import { targeted } from './scenarios/targeted.js'
import { window } from './scenarios/window.js'

const scenarios: Record<ScenarioName, (context: Context) => Promise<ScenarioResult>> = {
  fanout,
  fastpath,
  latency,
  memory,
  handshake,
  targeted,
  slow,
  window,
  history,
  cluster
}

const args = benchArgs(process.argv.slice(2))
const started = new Date()
const context: Context = { args }
const run: Run = { started: started.toISOString(), seconds: 0, machine: machine(), args, results: {} }

for (const name of args.scenarios) {
  const began = performance.now()
  const result = await scenarios[name](context)
  run.results[name] = result
  console.log(result.tables.map(markdown).join('\n\n'))
  console.log(`(${name}: ${((performance.now() - began) / 1000).toFixed(1)} s)\n`)
}
run.seconds = (Date.now() - started.getTime()) / 1000
run.results.suite = { tables: [], targets: suiteTargets(run) }
console.log(render(run))
console.log(`\nsaved ${save(run).join(', ')}`)

/** What the run as a whole is held to: headline ratios stable to 10%, the full suite within 10 minutes. */
function suiteTargets (run: Run): Target[] {
  const targets: Target[] = []
  const headlines = Object.values(run.results).flatMap((result) => result?.targets ?? []).filter((t) => t.headline === true && t.spread !== undefined)
  if (headlines.length > 0) {
    const widest = headlines.reduce((a, b) => (b.spread! > a.spread! ? b : a))
    targets.push(atMost(`widest spread of the ${headlines.length} headline ratios, % (${widest.name})`, widest.spread!, 10))
  }
  if (part(run.args) === 'suite') targets.push(atMost('full suite, minutes', run.seconds / 60, 10))
  return targets
}
