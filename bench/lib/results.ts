// What a scenario hands back: tables to print, and targets judged as ratios
// of numbers measured in the same run.
import type { BenchArgs } from './args.js'
import { peerNames, type PeerName } from './peers.js'

export type Cell = string | number

export interface Table {
  title: string
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
}

export interface ScenarioResult {
  tables: Table[]
  targets: Target[]
}

/** What scenarios share: the options, and earlier scenarios' findings (the latency runs reuse the fan-out rates). */
export interface Context {
  args: BenchArgs
  /** Fan-out frames/s by `${peer}/${subs}/${burst}/${size}`. */
  fanout: Map<string, number>
  /** The latency scenario's lowest load, by peer: its rate (events/s) and p99 (µs), which the slow-consumer run reuses. */
  openLoop: Map<string, { rate: number, p99: number }>
}

export const fanoutKey = (peer: string, subs: number, burst: number, size: number): string => `${peer}/${subs}/${burst}/${size}`

/** The scenario's own peers, or those of --peers. */
export const peersOf = (context: Context, own: PeerName[]): PeerName[] =>
  context.args.peers === undefined ? own : peerNames(context.args.peers)

export function atLeast (name: string, value: number, goal: number, note?: string): Target {
  return { name, value, goal: `>= ${goal}`, pass: value >= goal, ...(note === undefined ? {} : { note }) }
}

export function atMost (name: string, value: number, goal: number, note?: string): Target {
  return { name, value, goal: `<= ${goal}`, pass: value <= goal, ...(note === undefined ? {} : { note }) }
}
