// The machine and the versions a run was measured with.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'

// Read from node_modules directly: some packages (amqplib) do not export their package.json.
const version = (pkg: string): string =>
  (JSON.parse(readFileSync(new URL(`../../node_modules/${pkg}/package.json`, import.meta.url), 'utf8')) as { version: string }).version

function command (file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim()
  } catch {
    return 'unavailable'
  }
}

export interface Machine {
  cpu: string
  cores: number
  node: string
  rabbitmq: string
  redis: string
  /** 1-minute load average when the run started: other work on the machine skews every number. */
  load: number
  versions: Record<string, string>
}

export function machine (): Machine {
  const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]
  return {
    cpu: model ?? cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    node: process.version,
    rabbitmq: command('rabbitmqctl', ['version']),
    load: loadavg()[0] ?? 0,
    redis: /redis_version:(\S+)/.exec(command('redis-cli', ['info', 'server']))?.[1] ?? 'unavailable',
    versions: Object.fromEntries(['fastify', '@fastify/websocket', 'ws', 'socket.io', '@socket.io/redis-adapter', 'amqplib']
      .map((pkg) => [pkg, version(pkg)]))
  }
}

export function describe (m: Machine): string {
  const peers = Object.entries(m.versions).map(([pkg, v]) => `${pkg} ${v}`).join(', ')
  return `${m.cpu}, ${m.cores} cores (load average ${m.load.toFixed(2)} at the start); Node ${m.node}; RabbitMQ ${m.rabbitmq}; Redis ${m.redis}; ${peers}`
}
