// Tables as Markdown: readable in a terminal, and pasted as is into
// bench/RESULTS.md and the README.
import type { Cell, Table, Target } from './results.js'

function format (cell: Cell): string {
  return typeof cell === 'number' && Number.isInteger(cell) ? cell.toLocaleString('en-US') : String(cell)
}

export function markdown (table: Table): string {
  const cells = [table.columns, ...table.rows.map((row) => row.map(format))]
  const widths = table.columns.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length)))
  const line = (row: string[]): string => `| ${row.map((cell, i) => i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)).join(' | ')} |`
  const rule = `| ${widths.map((w, i) => i === 0 ? '-'.repeat(w) : '-'.repeat(w - 1) + ':').join(' | ')} |`
  const notes = (table.notes ?? []).flatMap((note) => [note, ''])
  return [`### ${table.title}`, '', ...notes, line(cells[0]!), rule, ...cells.slice(1).map(line)].join('\n')
}

export function targetsTable (targets: Target[]): Table {
  return {
    title: 'Targets (ratios from this run)',
    notes: ['Measured: the median over the rounds of the ratio (or value) taken in each round; spread: (max - min) / median of those, percent ("-": one measurement).'],
    columns: ['target', 'measured', 'spread %', 'goal', 'result'],
    rows: targets.map((t) => [t.name + (t.note === undefined ? '' : ` (${t.note})`), t.value.toFixed(2),
      t.spread === undefined ? '-' : t.spread.toFixed(1), t.goal, t.pass ? 'PASS' : 'MISS'])
  }
}
