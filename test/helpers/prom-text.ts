// A small reader of the Prometheus text format (0.0.4), for asserting what
// `app.eventSocket.metrics()` returns: each sample by name and labels, and
// each family's HELP and TYPE.

export interface Family { help: string | undefined, type: string | undefined }

export interface Scrape {
  /** Every family the text declares (HELP or TYPE), by name. */
  readonly families: ReadonlyMap<string, Family>
  /** The sample `name` with exactly `labels`; 0 when absent (a labelled series nobody has moved yet). */
  value (name: string, labels?: Record<string, string>): number
  /** Every sample of `name`, with its labels. */
  samples (name: string): Array<{ labels: Record<string, string>, value: number }>
}

const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g
const SAMPLE = /^(\w+)(?:\{(.*)\})? (\S+)$/

function unescape (value: string): string {
  return value.replace(/\\(.)/g, (_, char: string) => char === 'n' ? '\n' : char)
}

const keyOf = (name: string, labels: Record<string, string>): string =>
  `${name}${JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)))}`

export function parsePrometheus (text: string): Scrape {
  const families = new Map<string, Family>()
  const values = new Map<string, number>()
  const byName = new Map<string, Array<{ labels: Record<string, string>, value: number }>>()
  for (const line of text.split('\n')) {
    if (line === '') continue
    const comment = /^# (HELP|TYPE) (\w+) (.*)$/.exec(line)
    if (comment !== null) {
      const [, kind, name = '', rest = ''] = comment
      const family = families.get(name) ?? { help: undefined, type: undefined }
      if (kind === 'HELP') family.help = rest
      else family.type = rest
      families.set(name, family)
      continue
    }
    const sample = SAMPLE.exec(line)
    if (sample === null) throw new Error(`not a Prometheus sample line: ${line}`)
    const [, name = '', labelText = '', valueText = ''] = sample
    const labels: Record<string, string> = {}
    for (const [, label = '', value = ''] of labelText.matchAll(LABEL)) labels[label] = unescape(value)
    const value = Number(valueText.replace(/^\+Inf$/, 'Infinity'))
    if (Number.isNaN(value)) throw new Error(`not a number in: ${line}`)
    values.set(keyOf(name, labels), value)
    byName.set(name, [...(byName.get(name) ?? []), { labels, value }])
  }
  return {
    families,
    value: (name, labels = {}) => values.get(keyOf(name, labels)) ?? 0,
    samples: (name) => byName.get(name) ?? []
  }
}

/** Reads a fresh scrape each call, for asserting deltas: `const after = await scrape(); after.value(x) - before.value(x)`. */
export async function scrape (app: { eventSocket: { metrics: () => Promise<string> } }): Promise<Scrape> {
  return parsePrometheus(await app.eventSocket.metrics())
}
