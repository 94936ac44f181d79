// RabbitMQ's CPU time, read from /proc. With history on, part of the cost
// moves into the broker (writing the stream, serving its readers), where the
// servers' own readings do not see it. Other work on the same broker (tests
// running beside the bench) is counted too: the figure is an upper bound.
//
// The machine may run several nodes: its own (AMQP_URL) and the three of the
// local cluster. Each is found by its AMQP port, from the RABBITMQ_NODE_PORT
// its VM was started with (none: the default, 5672).
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { AMQP_URL, portOf } from './config.js'

const DEFAULT_PORT = 5672

function ticksPerSecond (): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
}

/** The AMQP port of a node's VM; undefined when its environment is not ours to read. */
function nodePort (pid: string): number | undefined {
  try {
    const port = /(?:^|\0)RABBITMQ_NODE_PORT=(\d+)/.exec(readFileSync(`/proc/${pid}/environ`, 'utf8'))?.[1]
    return port === undefined ? DEFAULT_PORT : Number(port)
  } catch {
    return undefined
  }
}

/**
 * RabbitMQ's Erlang VMs by AMQP port: not any beam.smp, since every
 * rabbitmqctl runs one for a moment. A single node whose environment cannot
 * be read is taken for the default port's.
 */
function findBrokers (): Map<number, string> {
  const found = new Map<number, string>()
  const unknown: string[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'beam.smp') continue
      if (!readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('\0-s\0rabbit\0boot\0')) continue
      const port = nodePort(entry)
      if (port === undefined) unknown.push(entry)
      else found.set(port, entry)
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  if (found.size === 0 && unknown.length === 1) found.set(DEFAULT_PORT, unknown[0]!)
  return found
}

let brokers: Map<number, string> | null = null
let tick = 0

function cpuOf (pid: string): number {
  // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the 12th and 13th.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) * tick
}

/**
 * CPU time (user + system) so far of the local nodes listening on `ports`
 * (by default the machine's own, AMQP_URL), added up, microseconds;
 * undefined when one of them is not a process on this machine.
 */
export function brokerCpu (ports: number[] = [portOf(AMQP_URL)]): number | undefined {
  if (brokers === null) {
    brokers = findBrokers()
    tick = 1e6 / ticksPerSecond()
  }
  let total = 0
  for (const port of ports) {
    const pid = brokers.get(port)
    try {
      if (pid === undefined) throw new Error('not found')
      total += cpuOf(pid)
    } catch {
      // Restarted, or not started yet: the next reading looks again.
      brokers = null
      return undefined
    }
  }
  return total
}

/** Broker CPU between two readings, microseconds; undefined when either is missing or a node restarted between them. */
export function brokerCpuBetween (before: number | undefined, after: number | undefined): number | undefined {
  return before === undefined || after === undefined || after < before ? undefined : after - before
}

/**
 * Which processes serve `ports` now, as one string: it changes when a node
 * restarts (another process stopping and starting a node of the shared
 * cluster), so that a run can tell which of its figures a restart disturbed.
 */
export function nodeProcesses (ports: number[]): string {
  const found = findBrokers()
  return ports.map((port) => `${port}:${found.get(port) ?? 'down'}`).join(',')
}
