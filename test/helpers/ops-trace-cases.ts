// Trace headers a producer that is not this plugin may put on an AMQP
// message, at and past the bounds lib/bus/amqp-message.ts holds them to
// (traceparent 256 characters, tracestate 512), of every type an AMQP header
// can have, and invalid by W3C Trace Context; with what the delivery span
// must make of each under the W3C propagator.

export const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736'
const SPAN_ID = '00f067aa0ba902b7'
export const VALID_PARENT = `00-${TRACE_ID}-${SPAN_ID}-01`
const VALID = VALID_PARENT

export interface TraceCase {
  what: string
  headers: Record<string, unknown>
  /** The trace id the delivery span continues; undefined: a trace of its own. */
  parent: string | undefined
  /** The tracestate the delivery span carries (serialized); undefined: none. */
  tracestate: string | undefined
}

/** A traceparent of a future version (its trailing fields allowed by the spec) of exactly `length` characters. */
export function futureTraceparent (length: number): string {
  const head = `cc-${TRACE_ID}-${SPAN_ID}-01-`
  return head + 'x'.repeat(length - head.length)
}

/** A valid tracestate of exactly `length` characters, in members of at most 100. */
export function tracestateOf (length: number): string {
  const members: string[] = []
  let used = 0
  for (let i = 0; used < length; i++) {
    const separator = members.length === 0 ? 0 : 1
    const key = `k${i}=`
    const room = length - used - separator - key.length
    // Leaves at least 5 characters for a last member, rather than a remainder too short for one.
    const value = room <= 100 ? room : Math.min(100 - key.length, room - 5 - key.length)
    members.push(key + 'v'.repeat(value))
    used += separator + key.length + value
  }
  return members.join(',')
}

export function traceCases (): TraceCase[] {
  const cases: TraceCase[] = []
  const add = (what: string, headers: Record<string, unknown>, parent: string | undefined, tracestate?: string): void => {
    cases.push({ what, headers, parent, tracestate })
  }
  add('valid, no tracestate', { traceparent: VALID }, TRACE_ID)
  add('traceparent of 255 characters', { traceparent: futureTraceparent(255) }, TRACE_ID)
  add('traceparent of 256 characters (the bound)', { traceparent: futureTraceparent(256) }, TRACE_ID)
  add('traceparent of 257 characters', { traceparent: futureTraceparent(257) }, undefined)
  // amqplib encodes at most 64 KiB of headers.
  add('traceparent of 60,000 characters', { traceparent: futureTraceparent(60_000) }, undefined)
  add('tracestate of 511 characters', { traceparent: VALID, tracestate: tracestateOf(511) }, TRACE_ID, tracestateOf(511))
  add('tracestate of 512 characters (the bound)', { traceparent: VALID, tracestate: tracestateOf(512) }, TRACE_ID, tracestateOf(512))
  add('tracestate of 513 characters', { traceparent: VALID, tracestate: tracestateOf(513) }, TRACE_ID)
  add('tracestate of 10,000 members', { traceparent: VALID, tracestate: Array.from({ length: 10_000 }, () => 'a=b').join(',') }, TRACE_ID)
  add('tracestate of 40 short members (over the 32 W3C allows)', { traceparent: VALID, tracestate: Array.from({ length: 40 }, (_, i) => `m${i}=v`).join(',') }, TRACE_ID,
    Array.from({ length: 32 }, (_, i) => `m${i}=v`).join(','))
  for (const [type, value] of [['a number', 42], ['a byte array', Buffer.from(VALID)], ['an array', [VALID]], ['a table', { traceparent: VALID }], ['a boolean', true], ['null', null]] as const) {
    add(`traceparent ${type}`, { traceparent: value, tracestate: 'a=b' }, undefined)
    add(`tracestate ${type}`, { traceparent: VALID, tracestate: value }, TRACE_ID)
  }
  add('version ff (forbidden)', { traceparent: VALID.replace(/^00/, 'ff') }, undefined)
  add('version 00 with trailing fields', { traceparent: `${VALID}-extra` }, undefined)
  add('upper-case trace id', { traceparent: VALID.toUpperCase() }, undefined)
  add('flags not hex', { traceparent: VALID.replace(/01$/, 'zz') }, undefined)
  add('all-zero trace id', { traceparent: `00-${'0'.repeat(32)}-${SPAN_ID}-01` }, undefined)
  add('all-zero span id', { traceparent: `00-${TRACE_ID}-${'0'.repeat(16)}-01` }, undefined)
  add('empty', { traceparent: '', tracestate: '' }, undefined)
  add('non-ASCII', { traceparent: `${VALID}é`, tracestate: 'é=é' }, undefined)
  add('tracestate of invalid members only', { traceparent: VALID, tracestate: ',,,=,a=,=b, ,A=b' }, TRACE_ID, '')
  return cases
}
