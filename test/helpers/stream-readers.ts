import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { Channel } from 'amqplib'

// The consumers this process opens on one history stream, seen from inside
// amqplib: every `consume` on the stream, and the close of its channel. The
// stream's readers (lib/bus/amqp-stream-reader.ts) each consume on a channel
// of their own and stop by closing it, so open channels are open readers. The
// broker's own count (rabbitmqctl list_consumers) costs a second of CPU per
// look and samples; this sees every open and close.

export interface StreamReaders {
  /** Consumers opened since the watch began at a numeric offset (the cursors of replays), open now. */
  readonly open: number
  /** The most `open` ever was. */
  readonly peak: number
  /** Every `x-stream-offset` consumed from since the watch began, in order (numbers for cursors, 'first'/'last' for probes). */
  readonly offsets: unknown[]
}

const require = createRequire(import.meta.url)
// Not an exported subpath: reached by file, as lib's `import 'amqplib'` loads it.
const { Channel: ChannelClass } = require(join(dirname(require.resolve('amqplib')), 'lib', 'channel_model.js')) as { Channel: { prototype: Channel } }

/** Watches the consumers on `stream` opened from now on, until the test ends. */
export function watchStreamReaders (t: { teardown: (fn: () => void) => void }, stream: string): StreamReaders {
  const prototype = ChannelClass.prototype
  const original = prototype.consume
  const offsets: unknown[] = []
  let open = 0
  let peak = 0
  prototype.consume = function (this: Channel, queue, onMessage, options) {
    const offset = (options?.arguments as Record<string, unknown> | undefined)?.['x-stream-offset']
    if (queue === stream) {
      offsets.push(offset)
      if (typeof offset === 'number') {
        open++
        peak = Math.max(peak, open)
        // Counted down when the close is asked for, not answered: the reader has let go of it then.
        let closed = false
        const done = (): void => {
          if (closed) return
          closed = true
          open--
        }
        const close = this.close.bind(this)
        this.close = async () => { done(); return await close() }
        this.once('close', done)
      }
    }
    return original.call(this, queue, onMessage, options)
  } as Channel['consume']
  t.teardown(() => { prototype.consume = original })
  return {
    get open () { return open },
    get peak () { return peak },
    offsets
  }
}
