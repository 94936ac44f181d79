import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import * as errors from '../lib/errors.js'
import { brokerDefaults, resolveOptions } from '../lib/options.js'

// The README's option and error tables, and the broker table of
// docs/rabbitmq.md that the README points to, are what users read instead of
// the code. Each list is taken from the code (the keys resolveOptions fills
// in, the errors lib/errors.ts exports), so an option or error added, renamed
// or given a new default anywhere in lib/ fails here until its row is written.

const root = new URL('../', import.meta.url)
const read = (path: string): string => readFileSync(new URL(path, root), 'utf8')
const docFiles = (): string[] => ['README.md', ...readdirSync(new URL('docs/', root)).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)]

interface Row { line: number, cells: string[] }

/** Line `i` as a table row; a cell may hold an escaped pipe (`boolean \| Promise<boolean>`). */
const rowAt = (lines: string[], i: number): Row =>
  ({ line: i + 1, cells: (lines[i] ?? '').slice(1, -1).split(/(?<!\\)\|/).map((text) => text.trim()) })

/** The rows of the first table after `heading`, header and rule excluded. */
function table (file: string, heading: string): Row[] {
  const lines = read(file).split('\n')
  const start = lines.findIndex((line) => line.trim() === heading)
  if (start === -1) throw new Error(`${file} has no "${heading}" heading`)
  const first = lines.findIndex((line, i) => i > start && (line.startsWith('|') || line.startsWith('#')))
  if (first === -1 || !(lines[first] ?? '').startsWith('|')) throw new Error(`${file} has no table under "${heading}"`)
  const rows: Row[] = []
  // Skip the header and the rule.
  for (let i = first + 2; lines[i]?.startsWith('|') === true; i++) {
    rows.push(rowAt(lines, i))
  }
  return rows
}

const cell = (row: Row, index: number): string => row.cells[index] ?? ''
const backticked = (text: string): string[] => [...text.matchAll(/`([^`]+)`/g)].map((match) => match[1] ?? '')

/** A default cell that starts with code holds literals (`50` / `100`); otherwise it is prose (`—`, "no check"). */
function literals (text: string): unknown[] | undefined {
  if (!text.startsWith('`')) return undefined
  return text.split(' / ').map((part) => {
    const code = backticked(part)[0]
    if (code === undefined) return Symbol('unparsed')
    if (/^'.*'$/.test(code)) return code.slice(1, -1)
    try {
      return JSON.parse(code) as unknown
    } catch {
      return Symbol(code)
    }
  })
}

const isPrimitive = (value: unknown): value is string | number | boolean =>
  typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'

/**
 * Checks one options table against `defaults`: a row for every key, a key
 * for every row, and each default the table states equal to the code's.
 * `prefix` strips `broker.` from names; `delegated` names rows that stand
 * for a nested table documented elsewhere. Returns what is wrong, one line each.
 */
function optionsTableProblems (where: string, rows: Row[], defaults: Record<string, unknown>, options: { prefix?: string, delegated?: Record<string, string[]> } = {}): string[] {
  const problems: string[] = []
  const documented = new Set<string>()
  for (const row of rows) {
    const { line } = row
    const names = backticked(cell(row, 0))
    const values = literals(cell(row, 1))
    if (names.length === 0) problems.push(`${where}:${line} names no option in its first column`)
    names.forEach((name, index) => {
      const [head = '', ...rest] = name.split('.')
      const nested = options.delegated?.[head]
      if (nested !== undefined && rest.length > 0) {
        documented.add(head)
        const key = rest.join('.')
        if (key !== '*' && !nested.includes(key)) problems.push(`${where}:${line} names \`${name}\`, which lib/options.ts does not resolve; remove the row or fix its name`)
        return
      }
      const key = options.prefix !== undefined && name.startsWith(options.prefix) ? name.slice(options.prefix.length) : name
      documented.add(key)
      if (!(key in defaults)) {
        problems.push(`${where}:${line} names \`${name}\`, which lib/options.ts does not resolve; remove the row or fix its name`)
        return
      }
      const actual = defaults[key]
      if (isPrimitive(actual)) {
        if (values?.length !== names.length) {
          problems.push(`${where}:${line}: \`${name}\` defaults to ${JSON.stringify(actual)} in lib/options.ts; the default column must state it as code`)
        } else if (values[index] !== actual) {
          problems.push(`${where}:${line}: the default of \`${name}\` is ${String(values[index])} in the table but ${JSON.stringify(actual)} in lib/options.ts`)
        }
      } else if (values !== undefined) {
        problems.push(`${where}:${line}: \`${name}\` has no literal default in lib/options.ts (${actual === undefined ? 'undefined' : typeof actual}); the default column must say so in words, not state a value`)
      }
    })
  }
  for (const key of Object.keys(defaults)) {
    if (!documented.has(key)) problems.push(`${where} has no row for the option \`${options.prefix ?? ''}${key}\`, which lib/options.ts resolves; add one with its default and meaning`)
  }
  return problems
}

t.test('the README options table has one row per option, with the default the code uses', async (t) => {
  const defaults: Record<string, unknown> = { ...resolveOptions({}) }
  t.ok(Object.keys(defaults).length > 20, 'resolveOptions({}) yields the option keys')
  const problems = optionsTableProblems('README.md "## Options"', table('README.md', '## Options'), defaults, {
    delegated: { broker: Object.keys(brokerDefaults) }
  })
  t.same(problems, [], 'every option of lib/options.ts has a row with its default, and every row is an option')
})

t.test('the broker options table of docs/rabbitmq.md has one row per broker option, with its default', async (t) => {
  const problems = optionsTableProblems('docs/rabbitmq.md "## Options"', table('docs/rabbitmq.md', '## Options'), { ...brokerDefaults }, { prefix: 'broker.' })
  t.same(problems, [], 'every broker option of lib/options.ts has a row with its default, and every row is a broker option')
})

const codeErrors = new Map<string, number | undefined>()
for (const [name, value] of Object.entries(errors)) {
  if (typeof value !== 'function') continue
  const error = new (value as new () => { code: string, statusCode?: number })()
  if (!/^FST_EVSOCK_[A-Z_]+$/.test(error.code)) throw new Error(`lib/errors.ts exports ${name} with the code ${error.code}, not an FST_EVSOCK_ code`)
  codeErrors.set(error.code, error.statusCode)
}

t.test('the README errors table has one row per exported error, with its HTTP status', async (t) => {
  t.ok(codeErrors.size > 10, 'lib/errors.ts exports the errors')
  const problems: string[] = []
  const documented = new Set<string>()
  for (const row of table('README.md', '## Errors')) {
    const { line } = row
    const code = backticked(cell(row, 0))[0] ?? cell(row, 0)
    const status = Number(cell(row, 1))
    documented.add(code)
    if (!codeErrors.has(code)) {
      problems.push(`README.md:${line} documents ${code}, which lib/errors.ts does not export; remove the row or fix the code`)
    } else if (status !== codeErrors.get(code)) {
      problems.push(`README.md:${line}: ${code} has status ${cell(row, 1)} in the table but ${String(codeErrors.get(code))} in lib/errors.ts`)
    }
  }
  for (const code of codeErrors.keys()) {
    if (!documented.has(code)) problems.push(`README.md "## Errors" has no row for ${code}, which lib/errors.ts exports; add one with its status and what raises it`)
  }
  t.same(problems, [], 'every error of lib/errors.ts has a row with its status, and every row is an exported error')
})

t.test('every FST_EVSOCK_ code the docs mention exists, and the handshake refusals carry its status', async (t) => {
  const problems: string[] = []
  for (const file of docFiles()) {
    for (const [line, text] of read(file).split('\n').entries()) {
      for (const [code] of text.matchAll(/FST_EVSOCK_[A-Z_]+/g)) {
        if (!codeErrors.has(code)) problems.push(`${file}:${line + 1} mentions ${code}, which lib/errors.ts does not export`)
      }
    }
  }
  for (const row of table('docs/protocol.md', '### Refusals')) {
    const code = /FST_EVSOCK_[A-Z_]+/.exec(cell(row, 3))?.[0]
    if (code === undefined || !codeErrors.has(code)) continue
    if (Number(cell(row, 2)) !== codeErrors.get(code)) problems.push(`docs/protocol.md:${row.line}: ${code} has status ${cell(row, 2)} in the refusals table but ${String(codeErrors.get(code))} in lib/errors.ts`)
  }
  t.same(problems, [], 'the docs name only real error codes, and the protocol\'s refusal statuses are the code\'s')
})

t.test('every figure of the README Performance section is in bench/RESULTS.md', async (t) => {
  // The README keeps a summary of the latest run; a new run rewrites
  // bench/RESULTS.md, and a figure it no longer holds is stale in the README.
  const readme = read('README.md')
  const start = readme.indexOf('\n## Performance\n')
  t.not(start, -1, 'the README has a Performance section')
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1))
    .replace(/```[\s\S]*?```/g, '')   // the commands to reproduce it
    .replace(/`[^`]*`/g, '')          // peer names and commands in prose
    .replace(/\(bench\/RESULTS\.md\)/g, '')
  const results = read('bench/RESULTS.md').replaceAll(',', '')
  const missing = [...new Set(section.match(/\d[\d,]*(?:\.\d+)?/g) ?? [])]
    .filter((figure) => !new RegExp(`(?<![\\d.])${figure.replaceAll(',', '').replaceAll('.', '\\.')}(?!\\d)`).test(results))
  t.same(missing, [], 'figures in the README Performance section that bench/RESULTS.md does not hold (update the summary from the latest run)')
})

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
const slug = (heading: string): string => heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')

t.test('the docs stand alone: no file outside the package, and every link to a doc lands on a heading', async (t) => {
  const problems: string[] = []
  for (const file of docFiles()) {
    for (const [index, text] of read(file).split('\n').entries()) {
      // Files that are not part of the package: a reader of the published docs cannot open them.
      for (const [outside] of text.matchAll(/PROTOCOL\.md|DESIGN\.md|\.\.\/shared/g)) {
        problems.push(`${file}:${index + 1} refers to ${outside}, which is not in the package; link the project's own docs instead`)
      }
      for (const [, target = '', anchor] of text.matchAll(/\]\(((?:\.{0,2}\/)?[\w./-]*\.md)?(?:#([\w-]+))?\)/g)) {
        const path = target === '' ? file : new URL(target, new URL(file, root)).pathname.slice(new URL(root).pathname.length)
        let headings: string[]
        try {
          headings = read(path).split('\n').filter((line) => /^#{1,6} /.test(line)).map((line) => slug(line.replace(/^#+ /, '')))
        } catch {
          problems.push(`${file}:${index + 1} links ${target}, which does not exist`)
          continue
        }
        if (anchor !== undefined && !headings.includes(anchor)) problems.push(`${file}:${index + 1} links ${target}#${anchor}, but ${path} has no such heading`)
      }
    }
  }
  t.same(problems, [], 'references that a reader of the docs cannot follow')
})

const units: Record<string, number> = { '': 1, '/s': 1, s: 1000, KB: 1024, MiB: 1024 * 1024 }

t.test('the option tables of docs/security.md name real options, with the code\'s defaults', async (t) => {
  const defaults: Record<string, unknown> = { ...resolveOptions({}) }
  const problems: string[] = []
  const lines = read('docs/security.md').split('\n')
  for (const [index, text] of lines.entries()) {
    if (!/^\| option \| default \|/.test(text)) continue
    for (let i = index + 2; lines[i]?.startsWith('|') === true; i++) {
      const row = rowAt(lines, i)
      const names = backticked(cell(row, 0))
      // `10 / 60 s`, `1024 / 4 MiB`, `50/s / 100`: one value per name, each with its unit.
      const values = cell(row, 1).split(' / ').map((part) => /^(\d+)\s*(\/s|s|KB|MiB)?\b/.exec(part.trim()))
      names.forEach((name, n) => {
        if (!(name in defaults)) {
          problems.push(`docs/security.md:${row.line} names \`${name}\`, which lib/options.ts does not resolve`)
          return
        }
        const match = values.length === names.length ? values[n] : undefined
        if (match === null || match === undefined) {
          problems.push(`docs/security.md:${row.line}: cannot read the default of \`${name}\` from "${cell(row, 1)}" (write it as a number, with s, KB or MiB)`)
          return
        }
        const stated = Number(match[1]) * (units[match[2] ?? ''] ?? Number.NaN)
        if (stated !== defaults[name]) problems.push(`docs/security.md:${row.line}: the default of \`${name}\` is ${match[0]} in the table but ${String(defaults[name])} in lib/options.ts`)
      })
    }
  }
  t.same(problems, [], 'every option the security tables name exists, with the default lib/options.ts gives it')
})
