// RabbitMQ's CPU time, read from /proc. With history on, part of the cost
// moves into the broker (writing the stream, serving its readers), where the
// servers' own readings do not see it. Other work on the same broker (tests
// running beside the bench) is counted too: the figure is an upper bound.
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

function ticksPerSecond (): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
}

/** RabbitMQ's Erlang VM: not any beam.smp, since every rabbitmqctl runs one for a moment. */
function findBroker (): string | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'beam.smp') continue
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('\0-s\0rabbit\0boot\0')) return entry
    } catch {
      // Gone meanwhile, or not ours to read.
    }
  }
  return undefined
}

let pid: string | undefined | null = null
let tick = 0

/** CPU time (user + system) of the local RabbitMQ so far, microseconds; undefined when it is not a process on this machine. */
export function brokerCpu (): number | undefined {
  if (pid === null) {
    pid = findBroker()
    tick = 1e6 / ticksPerSecond()
  }
  if (pid === undefined) return undefined
  try {
    // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the 12th and 13th.
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return (Number(fields[11]) + Number(fields[12])) * tick
  } catch {
    // Restarted: the next reading finds the new process.
    pid = null
    return undefined
  }
}

/** Broker CPU between two readings, microseconds; undefined when either is missing or the broker restarted between them. */
export function brokerCpuBetween (before: number | undefined, after: number | undefined): number | undefined {
  return before === undefined || after === undefined || after < before ? undefined : after - before
}
