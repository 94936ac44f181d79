// The `data` of every benchmark event: a publish timestamp and padding. The
// timestamp is process.hrtime in nanoseconds, one clock for every process on
// the machine, so a generator computes one-way latency against its own clock.

export interface EventData {
  /** process.hrtime.bigint() at publish (or the intended publish time in open-loop runs), as a number. */
  t: number
  p: string
}

export const nowNs = (): number => Number(process.hrtime.bigint())

const paddings = new Map<number, string>()

/** Data whose JSON is `size` bytes (for sizes above the fixed part), stamped with `t`. */
export function eventData (size: number, t: number = nowNs()): EventData {
  let padding = paddings.get(size)
  if (padding === undefined) {
    // {"t":<16 digits>,"p":""} is 27 bytes for today's hrtime values.
    padding = 'x'.repeat(Math.max(0, size - JSON.stringify({ t: nowNs(), p: '' }).length))
    paddings.set(size, padding)
  }
  return { t, p: padding }
}
