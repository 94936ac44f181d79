import type { OutboundEvent } from '../codec.js'
import type { BusMessage } from './types.js'

// The encoded event of a message a history retains, kept beside it: a
// thousand clients resuming from the same place replay the same messages,
// and each would otherwise encode every one of them again, where live
// delivery encodes an event once per format for all its sockets. The first
// replay to read a message makes its OutboundEvent; the next ones share it,
// frames and all, until the history drops the message. A history whose bound
// is only memory (the RabbitMQ history's recent messages) counts the frames'
// bytes in it meanwhile; one whose bound is the retention clients resume
// within (the in-process history's `maxBytes`) does not, and says so.

/** The room beside one retained message, made by its history on the first read. */
export class EventRoom {
  #event: OutboundEvent | undefined
  /** Adds bytes to the history's count; undefined for a history that does not count them, or once it dropped the message. */
  #count: ((bytes: number) => void) | undefined

  constructor (count?: (bytes: number) => void) {
    this.#count = count
  }

  /**
   * The message's event, made by `make` on the first ask; `make` is handed
   * the function its event reports each encoded frame's bytes to.
   */
  event (make: (encoded: (bytes: number) => void) => OutboundEvent): OutboundEvent {
    this.#event ??= make((bytes) => { this.#count?.(bytes) })
    return this.#event
  }

  /** The history dropped the message: frames encoded from now on are not its to count. */
  drop (): void {
    this.#count = undefined
  }
}

/** Rooms by the message object their history hands out on every read of it (weakly: they go with the message). */
const rooms = new WeakMap<BusMessage, EventRoom>()

/** Makes the room beside `message` (once, on its first read); `count`, if given, adds the bytes its frames hold to the history's bound. */
export function makeRoom (message: BusMessage, count?: (bytes: number) => void): EventRoom {
  const room = new EventRoom(count)
  rooms.set(message, room)
  return room
}

/** The room a history made beside `message`, if it keeps one. */
export function retainedRoom (message: BusMessage): EventRoom | undefined {
  return rooms.get(message)
}
