// Repeated measurements: every point is taken several times (`--rounds`),
// the peers of a point in turn, every other round in reverse order, so that
// the machine's load drifting during a run favours none of them. A point is
// reported as the median of its rounds, with their spread.

export function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

/** (max - min) / median of the rounds, percent; 0 for a single round. */
export function spread (values: number[]): number {
  if (values.length < 2) return 0
  const mid = median(values)
  return mid === 0 ? 0 : (Math.max(...values) - Math.min(...values)) / Math.abs(mid) * 100
}

/** A spread as a table cell: one decimal, and '-' where there was one round only. */
export const spreadCell = (values: number[]): string => values.length < 2 ? '-' : spread(values).toFixed(1)

/** Each field the median of its own samples (numbers, and objects of numbers, at any depth). */
export function medians<T extends object> (samples: T[]): T {
  const first = samples[0]!
  return Object.fromEntries(Object.entries(first).map(([key, value]) => {
    if (typeof value === 'number') return [key, median(samples.map((s) => (s as Record<string, number>)[key]!))]
    if (value !== null && typeof value === 'object') return [key, medians(samples.map((s) => (s as Record<string, object>)[key]!))]
    return [key, samples.some((s) => (s as Record<string, unknown>)[key] === undefined) ? undefined : value]
  })) as T
}

/**
 * `count` samples of `sample` for each item, the items in turn, every other
 * round in reverse order; keyed by `label`.
 */
export async function interleaved<I, T> (items: I[], count: number, label: (item: I) => string,
  sample: (item: I, round: number) => Promise<T>): Promise<Map<string, T[]>> {
  const samples = new Map<string, T[]>(items.map((item) => [label(item), []]))
  for (let round = 0; round < count; round++) {
    const order = round % 2 === 0 ? items : [...items].reverse()
    for (const item of order) samples.get(label(item))!.push(await sample(item, round))
  }
  return samples
}

/** Round by round, `a[i] / b[i]`: a ratio's rounds, whose median and spread a target reports. */
export const ratios = (a: number[], b: number[]): number[] => a.slice(0, b.length).map((value, i) => value / b[i]!)

/** The spread a target reports: undefined for a single round. */
export const roundsSpread = (values: number[]): number | undefined => values.length > 1 ? spread(values) : undefined

/** How a table's figures were sampled, for its title. */
export const mediansOf = (rounds: number): string => `medians of ${rounds} round${rounds === 1 ? '' : 's'}`
