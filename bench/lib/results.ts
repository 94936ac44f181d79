// What a scenario hands back: tables to print, and targets judged as ratios
// of numbers measured in the same run.
import type { BenchArgs } from './args.js'
import { peerNames, type PeerName } from './peers.js'

export type Cell = string | number

export interface Table {
  title: string
  /** Paragraphs printed under the title: conditions and checks a reader needs to read the rows. */
  notes?: string[]
  columns: string[]
  rows: Cell[][]
}

export interface Target {
  name: string
  /** The measured ratio (or value), and the goal it is held to. */
  value: number
  goal: string
  pass: boolean
  /** Why, where the number needs a reason. */
  note?: string
  /** With several rounds: the spread of the value over them, percent ((max - min) / median). */
  spread?: number
  /** One of the ratios the README's summary quotes: its spread is held under 10% (bench/run.ts). */
  headline?: boolean
}

export interface ScenarioResult {
  tables: Table[]
  targets: Target[]
}

/** What scenarios share: the options. */
export interface Context {
  args: BenchArgs
}

export const fanoutKey = (peer: string, subs: number, burst: number, size: number): string => `${peer}/${subs}/${burst}/${size}`

/** The scenario's own peers, or those of --peers. */
export const peersOf = (context: Context, own: PeerName[]): PeerName[] =>
  context.args.peers === undefined ? own : peerNames(context.args.peers)

const optional = (note: string | undefined, spread: number | undefined): Partial<Target> =>
  ({ ...(note === undefined ? {} : { note }), ...(spread === undefined ? {} : { spread }) })

/** `spread`: that of the rounds the value is the median of (see bench/lib/sampled.ts). */
export function atLeast (name: string, value: number, goal: number, note?: string, spread?: number): Target {
  return { name, value, goal: `>= ${goal}`, pass: value >= goal, ...optional(note, spread) }
}

export function atMost (name: string, value: number, goal: number, note?: string, spread?: number): Target {
  return { name, value, goal: `<= ${goal}`, pass: value <= goal, ...optional(note, spread) }
}

/** Marks a target as one the README's summary quotes. */
export const headline = (target: Target): Target => ({ ...target, headline: true })
