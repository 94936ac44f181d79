// Command line: `npm run bench -- [scenario ...] [--option value ...]`.
import { parseArgs } from 'node:util'

export const SCENARIOS = ['fanout', 'fastpath', 'latency', 'memory', 'handshake', 'targeted', 'slow', 'window', 'history', 'cluster'] as const
export type ScenarioName = typeof SCENARIOS[number]

/**
 * Scenarios that are runs of their own (`npm run bench -- history`, `npm run
 * bench -- cluster`), each kept in a section of bench/RESULTS.md
 * (bench/lib/report.ts): the suite must fit in 10 minutes, and the cluster
 * scenario needs the local cluster (scripts/rabbitmq-cluster.sh start).
 */
export const SEPARATE = ['history', 'cluster'] as const satisfies readonly ScenarioName[]

/** The full suite, what `npm run bench` runs and bench/RESULTS.md holds: every scenario but the separate ones. Within 10 minutes. */
export const SUITE: readonly ScenarioName[] = SCENARIOS.filter((name) => !(SEPARATE as readonly string[]).includes(name))

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
  /** Fixed event rates of the latency runs, events/s. */
  rates: number[]
  /** Peers, overriding each scenario's own list. */
  peers: string | undefined
  /** Measurement window of a throughput point, and the warm-up before it, seconds. */
  seconds: number
  warmup: number
  /** Measurement window of a fixed-rate point, seconds. */
  latencySeconds: number
  /** Times each point is measured (the peers in turn); tables give the median and the spread. */
  rounds: number
  /** A development run: one round, fewer points, shorter windows (history: about a third of the time). */
  quick: boolean
}

const numbers = (text: string): number[] => text.split(',').map(Number)

/** Defaults of the full suite, and where `--quick` differs. */
const DEFAULTS = {
  subs: '1000,5000',
  bursts: '1,5,20',
  sizes: '128,1024',
  conns: '10000',
  windows: '1,16,64,256',
  rates: '10,100,1000',
  seconds: '0.6',
  warmup: '0.15',
  'latency-seconds': '1.5',
  rounds: '3'
}
const QUICK: Partial<typeof DEFAULTS> = { subs: '1000', sizes: '128', conns: '2000', seconds: '0.4', 'latency-seconds': '1', rounds: '1' }

export const USAGE = `usage: npm run bench -- [${SCENARIOS.join('|')} ...] [--subs 1000,5000] [--bursts 1,5,20]
  [--sizes 128,1024] [--conns 10000] [--windows 1,16,64,256] [--rates 10,100,1000] [--peers a,b]
  [--seconds 0.6] [--warmup 0.15] [--latency-seconds 1.5] [--rounds 3] [--quick]
  no scenario: the full suite (${SUITE.join(' ')}); --quick: ${Object.entries(QUICK).map(([k, v]) => `--${k} ${v}`).join(' ')}`

export function benchArgs (argv: string[]): BenchArgs {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...Object.fromEntries(Object.keys(DEFAULTS).map((key) => [key, { type: 'string' }])) as Record<keyof typeof DEFAULTS, { type: 'string' }>,
      peers: { type: 'string' },
      quick: { type: 'boolean', default: false }
    }
  })
  for (const name of positionals) {
    if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`unknown scenario ${name}\n${USAGE}`)
  }
  const quick = values.quick === true
  const value = (key: keyof typeof DEFAULTS): string => (values[key] as string | undefined) ?? (quick ? QUICK[key] : undefined) ?? DEFAULTS[key]
  return {
    scenarios: positionals.length === 0 ? [...SUITE] : positionals as ScenarioName[],
    subs: numbers(value('subs')),
    bursts: numbers(value('bursts')),
    sizes: numbers(value('sizes')),
    conns: Number(value('conns')),
    windows: numbers(value('windows')),
    rates: numbers(value('rates')),
    peers: values.peers as string | undefined,
    seconds: Number(value('seconds')),
    warmup: Number(value('warmup')),
    latencySeconds: Number(value('latency-seconds')),
    rounds: Math.max(1, Math.round(Number(value('rounds')))),
    quick
  }
}
