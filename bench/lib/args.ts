// Command line: `npm run bench -- [scenario ...] [--option value ...]`.
import { parseArgs } from 'node:util'

export const SCENARIOS = ['fanout', 'fastpath', 'latency', 'memory', 'handshake', 'targeted', 'slow', 'window', 'history'] as const
export type ScenarioName = typeof SCENARIOS[number]

export interface BenchArgs {
  scenarios: ScenarioName[]
  /** Subscribers in fan-out, latency, slow-consumer and window runs. */
  subs: number[]
  bursts: number[]
  /** Event data sizes, bytes of JSON. */
  sizes: number[]
  /** Connections in the memory and targeted runs. */
  conns: number
  windows: number[]
  /** Open-loop rates as fractions of the peer's fan-out rate. */
  loads: number[]
  /** Peers, overriding each scenario's own list. */
  peers: string | undefined
  /** Measurement window of a throughput point, and the warm-up before it, seconds. */
  seconds: number
  warmup: number
  /** Measurement window of latency runs, seconds. */
  latencySeconds: number
  /** Smaller runs where a scenario offers them (history: about a third of the time). */
  quick: boolean
}

const numbers = (text: string): number[] => text.split(',').map(Number)

export const USAGE = `usage: npm run bench -- [${SCENARIOS.join('|')} ...] [--subs 1000,5000] [--bursts 1,5,20]
  [--sizes 128,1024] [--conns 10000] [--windows 1,16,64,256] [--loads 0.5,0.8] [--peers a,b]
  [--seconds 0.6] [--warmup 0.15] [--latency-seconds 2] [--quick]`

export function benchArgs (argv: string[]): BenchArgs {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      subs: { type: 'string', default: '1000,5000' },
      bursts: { type: 'string', default: '1,5,20' },
      sizes: { type: 'string', default: '128,1024' },
      conns: { type: 'string', default: '10000' },
      windows: { type: 'string', default: '1,16,64,256' },
      loads: { type: 'string', default: '0.5,0.8' },
      peers: { type: 'string' },
      seconds: { type: 'string', default: '0.6' },
      warmup: { type: 'string', default: '0.15' },
      'latency-seconds': { type: 'string', default: '2' },
      quick: { type: 'boolean', default: false }
    }
  })
  for (const name of positionals) {
    if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`unknown scenario ${name}\n${USAGE}`)
  }
  return {
    scenarios: positionals.length === 0 ? [...SCENARIOS] : positionals as ScenarioName[],
    subs: numbers(values.subs),
    bursts: numbers(values.bursts),
    sizes: numbers(values.sizes),
    conns: Number(values.conns),
    windows: numbers(values.windows),
    loads: numbers(values.loads),
    peers: values.peers,
    seconds: Number(values.seconds),
    warmup: Number(values.warmup),
    latencySeconds: Number(values['latency-seconds']),
    quick: values.quick
  }
}
