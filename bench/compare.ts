// `npx tsx bench/compare.ts <run.json> <run.json>`: do two runs
// (bench/results/*.json) agree? For each target both hold, the difference of
// their medians against the wider of their two spreads: a second run agrees
// with the first where the difference is within that spread.
import { readFileSync } from 'node:fs'
import { markdown } from './lib/table.js'
import type { Run } from './lib/report.js'
import type { Cell, Target } from './lib/results.js'

const [first, second] = process.argv.slice(2)
if (first === undefined || second === undefined) throw new Error('usage: npx tsx bench/compare.ts <run.json> <run.json>')

const targetsOf = (file: string): Map<string, Target> => {
  const run = JSON.parse(readFileSync(file, 'utf8')) as Run
  return new Map(Object.values(run.results).flatMap((result) => result?.targets ?? []).map((target) => [target.name, target]))
}

const a = targetsOf(first)
const b = targetsOf(second)
const rows: Cell[][] = []
let disagree = 0
for (const [name, x] of a) {
  const y = b.get(name)
  if (y === undefined) continue
  const difference = x.value === 0 ? Math.abs(y.value) * 100 : Math.abs(y.value - x.value) / Math.abs(x.value) * 100
  const allowed = x.spread === undefined || y.spread === undefined ? undefined : Math.max(x.spread, y.spread)
  const verdict = allowed === undefined ? '-' : difference <= allowed ? 'agrees' : 'differs'
  if (verdict === 'differs') disagree++
  const cell = (t: Target): string => `${t.value.toFixed(2)}${t.spread === undefined ? '' : ` (${t.spread.toFixed(1)}%)`} ${t.pass ? 'PASS' : 'MISS'}`
  rows.push([name, cell(x), cell(y), difference.toFixed(1), allowed === undefined ? '-' : allowed.toFixed(1), verdict])
}
console.log(markdown({
  title: `${first} against ${second}`,
  notes: ['Each run: median (spread %) and result. Difference: |second - first| / first, percent; it agrees within the wider spread ("-": no spread, one measurement or a difference of ms).'],
  columns: ['target', 'first', 'second', 'difference %', 'spread %', 'verdict'],
  rows
}))
console.log(`\n${disagree} of ${rows.filter((row) => row[5] !== '-').length} targets with a spread differ by more than it.`)
