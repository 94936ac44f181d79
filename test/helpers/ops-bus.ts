import type { EventSocketApi, EventSocketReadiness } from '../../lib/index.js'
import type { Bus, BusHistory, BusMessage, Deliver } from '../../lib/bus/types.js'

// A bus around another (the in-process one, or an amqp bus) with a hand on the
// readiness probes, for the attack tests of lib/probe.ts: it counts them, and
// can lose them, hold them until released, or throw on them synchronously (a
// bus of the app's own that breaks the contract). It also keeps the `deliver`
// the plugin started it with, so that a test can hand the hub messages no
// publisher of this plugin could have sent.

export type ProbeMode = 'pass' | 'lose' | 'hold' | 'throw'

import { PROBE_PREFIX } from '../../lib/probe.js'

export interface OpsBus extends Bus {
  /** Probes published so far (whatever their mode). */
  readonly probes: () => number
  /** The key of this instance's probes, once one was published. */
  readonly probeKey: () => string | undefined
  /** The message ids of the probes published so far, oldest first. */
  readonly probeIds: () => string[]
  setProbes: (mode: ProbeMode) => void
  /** Lets the held probes go on to the inner bus (`close` does too, before closing it). */
  release: () => void
  /** Hands `message` to the plugin as if the bus had delivered it. */
  inject: (message: BusMessage) => void
  /** Resolves once the plugin called `close` on it, before the held probes go on. */
  readonly closing: Promise<void>
}

export function opsBus (inner: Bus): OpsBus {
  let probes = 0
  let key: string | undefined
  const ids: string[] = []
  let mode: ProbeMode = 'pass'
  let openGate: () => void = () => {}
  let gate = new Promise<void>((resolve) => { openGate = resolve })
  const heldPublishes: Array<Promise<void>> = []
  let deliver: Deliver | undefined
  let closed!: () => void
  const closing = new Promise<void>((resolve) => { closed = resolve })
  // Not async: the 'throw' mode must throw before any promise exists.
  const publish = (message: BusMessage): Promise<void> => {
    if (!message.topic.startsWith(PROBE_PREFIX)) return inner.publish(message)
    probes++
    key = message.topic
    ids.push(message.id)
    switch (mode) {
      case 'lose': return Promise.resolve()
      case 'throw': throw new Error('thrown synchronously by the test bus')
      case 'hold': {
        const published = gate.then(() => inner.publish(message))
        heldPublishes.push(published)
        return published
      }
      default: return inner.publish(message)
    }
  }
  return {
    kind: inner.kind,
    get history (): BusHistory | undefined { return inner.history },
    start: async (given) => { deliver = given; await inner.start(given) },
    publish,
    bind: (pattern) => inner.bind(pattern),
    unbind: (pattern) => inner.unbind(pattern),
    health: () => inner.health(),
    // As the amqp bus waits for the confirms of publishes in flight: the held probes go on, then the inner bus closes.
    close: async () => {
      closed()
      openGate()
      await Promise.allSettled(heldPublishes)
      await inner.close()
    },
    probes: () => probes,
    probeKey: () => key,
    probeIds: () => [...ids],
    setProbes: (next) => { mode = next },
    release: () => {
      openGate()
      gate = new Promise<void>((resolve) => { openGate = resolve })
    },
    inject: (message) => {
      if (deliver === undefined) throw new Error('the bus was not started')
      deliver(message)
    },
    closing
  }
}

export interface LostProbe {
  /** This instance's probe key. */
  key: string
  /** The id of a probe that came back earlier, for replays. */
  oldId: string
  /** The id of the probe the check waits for, which never reaches the bus. */
  currentId: string
  /** The check waiting for it. */
  check: Promise<EventSocketReadiness>
}

/**
 * One probe that comes back (it must: readiness is ok), then a check whose
 * probe the bus loses: from there, whatever comes back under the probe key
 * is someone else's, the forger's aim.
 */
export async function loseNextProbe (api: EventSocketApi, bus: OpsBus): Promise<LostProbe> {
  const ready = await api.health({ probe: true })
  if (ready.status !== 'ok') throw new Error(`not ready before the attack: ${ready.reason ?? ''}`)
  bus.setProbes('lose')
  const check = api.health({ probe: true })
  const ids = bus.probeIds()
  return { key: bus.probeKey() as string, oldId: ids[0] as string, currentId: ids.at(-1) as string, check }
}
