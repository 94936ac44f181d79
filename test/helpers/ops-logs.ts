import type { FastifyServerOptions } from 'fastify'
import type { LogEntry } from './broker.js'

// The log lines of an app under attack, kept for assertions (through a real
// pino logger, as Fastify writes them), and the raw lines too: a secret must
// not appear anywhere in a line, whatever field carries it.

export interface RecordedLogs {
  /** For `startServer`'s logger argument. */
  logger: FastifyServerOptions['logger']
  entries: LogEntry[]
  lines: string[]
  /** The lines at `level` or above whose message matches `pattern`. */
  at: (level: number, pattern?: RegExp) => LogEntry[]
}

export const WARN = 40

export function recordLogs (level = 'debug'): RecordedLogs {
  const entries: LogEntry[] = []
  const lines: string[] = []
  const stream = {
    write: (line: string) => {
      lines.push(line)
      entries.push(JSON.parse(line) as LogEntry)
    }
  }
  return {
    logger: { level, stream },
    entries,
    lines,
    at: (level, pattern) => entries.filter((entry) => entry.level >= level && (pattern === undefined || pattern.test(entry.msg)))
  }
}
