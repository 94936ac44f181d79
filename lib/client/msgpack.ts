// A minimal MessagePack codec, so that the client needs no runtime dependency
// and runs unchanged in browsers. It covers what the protocol carries (the
// JSON data model, plus binary, bigint, and the timestamp extension that other
// encoders use for dates) and nothing more: no records, no other extensions.

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder('utf-8', { fatal: true })

const TIMESTAMP_EXT = -1

/** Encodes `value` as one MessagePack object. `undefined` properties are left out, as JSON does. */
export function encode (value: unknown): Uint8Array {
  const writer = new Writer()
  writer.value(value)
  return writer.bytes()
}

/** Decodes exactly one MessagePack object that fills `bytes`. */
export function decode (bytes: Uint8Array | ArrayBuffer): unknown {
  const reader = new Reader(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes))
  const value = reader.value()
  if (reader.offset !== reader.bytes.length) throw new RangeError('msgpack: trailing bytes after the value')
  return value
}

class Writer {
  #buffer = new Uint8Array(256)
  #view = new DataView(this.#buffer.buffer)
  #length = 0

  bytes (): Uint8Array {
    return this.#buffer.slice(0, this.#length)
  }

  value (value: unknown): void {
    switch (typeof value) {
      case 'string': return this.#string(value)
      case 'number': return this.#number(value)
      case 'boolean': return this.#byte(value ? 0xc3 : 0xc2)
      case 'bigint': return this.#bigint(value)
      case 'undefined': return this.#byte(0xc0)
      case 'object':
        if (value === null) return this.#byte(0xc0)
        if (Array.isArray(value)) return this.#array(value)
        if (value instanceof Uint8Array) return this.#binary(value)
        if (value instanceof Date) return this.#timestamp(value)
        return this.#map(value as Record<string, unknown>)
      default:
        throw new TypeError(`msgpack: cannot encode a ${typeof value}`)
    }
  }

  #number (value: number): void {
    if (Number.isSafeInteger(value)) {
      if (value >= 0) {
        if (value < 0x80) return this.#byte(value)
        if (value < 0x100) return this.#head(0xcc, 1, value)
        if (value < 0x10000) return this.#head(0xcd, 2, value)
        if (value < 0x100000000) return this.#head(0xce, 4, value)
        return this.#bigint(BigInt(value))
      }
      if (value >= -0x20) return this.#byte(value & 0xff)
      if (value >= -0x80) { this.#byte(0xd0); return this.#reserve(1, (at) => this.#view.setInt8(at, value)) }
      if (value >= -0x8000) { this.#byte(0xd1); return this.#reserve(2, (at) => this.#view.setInt16(at, value)) }
      if (value >= -0x80000000) { this.#byte(0xd2); return this.#reserve(4, (at) => this.#view.setInt32(at, value)) }
      return this.#bigint(BigInt(value))
    }
    this.#byte(0xcb)
    this.#reserve(8, (at) => this.#view.setFloat64(at, value))
  }

  #bigint (value: bigint): void {
    if (value >= 0n) {
      this.#byte(0xcf)
      this.#reserve(8, (at) => this.#view.setBigUint64(at, value))
    } else {
      this.#byte(0xd3)
      this.#reserve(8, (at) => this.#view.setBigInt64(at, value))
    }
  }

  #string (value: string): void {
    const bytes = textEncoder.encode(value)
    const length = bytes.length
    if (length < 0x20) this.#byte(0xa0 | length)
    else if (length < 0x100) this.#head(0xd9, 1, length)
    else if (length < 0x10000) this.#head(0xda, 2, length)
    else this.#head(0xdb, 4, length)
    this.#raw(bytes)
  }

  #binary (value: Uint8Array): void {
    const length = value.length
    if (length < 0x100) this.#head(0xc4, 1, length)
    else if (length < 0x10000) this.#head(0xc5, 2, length)
    else this.#head(0xc6, 4, length)
    this.#raw(value)
  }

  #array (value: unknown[]): void {
    this.#collection(value.length, 0x90, 0xdc)
    for (const item of value) this.value(item)
  }

  #map (value: Record<string, unknown>): void {
    const entries = Object.entries(value).filter(([, item]) => item !== undefined)
    this.#collection(entries.length, 0x80, 0xde)
    for (const [key, item] of entries) {
      this.#string(key)
      this.value(item)
    }
  }

  // The 96-bit timestamp form covers every Date, so it is the only one written.
  #timestamp (value: Date): void {
    const ms = value.getTime()
    const seconds = Math.floor(ms / 1000)
    const nanoseconds = (ms - seconds * 1000) * 1_000_000
    this.#raw(Uint8Array.of(0xc7, 12, TIMESTAMP_EXT & 0xff))
    this.#reserve(12, (at) => {
      this.#view.setUint32(at, nanoseconds)
      this.#view.setBigInt64(at + 4, BigInt(seconds))
    })
  }

  /** fix* header when the count fits in four bits, else the 16- or 32-bit form (`code16 + 1` is the 32-bit one). */
  #collection (count: number, fixCode: number, code16: number): void {
    if (count < 0x10) this.#byte(fixCode | count)
    else if (count < 0x10000) this.#head(code16, 2, count)
    else this.#head(code16 + 1, 4, count)
  }

  #head (code: number, size: 1 | 2 | 4, value: number): void {
    this.#byte(code)
    this.#reserve(size, (at) => {
      if (size === 1) this.#view.setUint8(at, value)
      else if (size === 2) this.#view.setUint16(at, value)
      else this.#view.setUint32(at, value)
    })
  }

  #byte (value: number): void {
    this.#reserve(1, (at) => { this.#buffer[at] = value })
  }

  #raw (bytes: Uint8Array): void {
    this.#reserve(bytes.length, (at) => this.#buffer.set(bytes, at))
  }

  #reserve (size: number, write: (at: number) => void): void {
    if (this.#length + size > this.#buffer.length) {
      const grown = new Uint8Array(Math.max(this.#buffer.length * 2, this.#length + size))
      grown.set(this.#buffer.subarray(0, this.#length))
      this.#buffer = grown
      this.#view = new DataView(grown.buffer)
    }
    const at = this.#length
    this.#length += size
    write(at)
  }
}

class Reader {
  readonly bytes: Uint8Array
  readonly #view: DataView
  offset = 0

  constructor (bytes: Uint8Array) {
    this.bytes = bytes
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  value (): unknown {
    const code = this.#uint(1)
    if (code < 0x80) return code
    if (code < 0x90) return this.#map(code & 0x0f)
    if (code < 0xa0) return this.#array(code & 0x0f)
    if (code < 0xc0) return this.#string(code & 0x1f)
    if (code >= 0xe0) return code - 0x100
    switch (code) {
      case 0xc0: return null
      case 0xc2: return false
      case 0xc3: return true
      case 0xc4: return this.#binary(this.#uint(1))
      case 0xc5: return this.#binary(this.#uint(2))
      case 0xc6: return this.#binary(this.#uint(4))
      case 0xc7: return this.#extension(this.#uint(1))
      case 0xc8: return this.#extension(this.#uint(2))
      case 0xc9: return this.#extension(this.#uint(4))
      case 0xca: return this.#at(4, (at) => this.#view.getFloat32(at))
      case 0xcb: return this.#at(8, (at) => this.#view.getFloat64(at))
      case 0xcc: return this.#uint(1)
      case 0xcd: return this.#uint(2)
      case 0xce: return this.#uint(4)
      case 0xcf: return safeNumber(this.#at(8, (at) => this.#view.getBigUint64(at)))
      case 0xd0: return this.#at(1, (at) => this.#view.getInt8(at))
      case 0xd1: return this.#at(2, (at) => this.#view.getInt16(at))
      case 0xd2: return this.#at(4, (at) => this.#view.getInt32(at))
      case 0xd3: return safeNumber(this.#at(8, (at) => this.#view.getBigInt64(at)))
      case 0xd4: return this.#extension(1)
      case 0xd5: return this.#extension(2)
      case 0xd6: return this.#extension(4)
      case 0xd7: return this.#extension(8)
      case 0xd8: return this.#extension(16)
      case 0xd9: return this.#string(this.#uint(1))
      case 0xda: return this.#string(this.#uint(2))
      case 0xdb: return this.#string(this.#uint(4))
      case 0xdc: return this.#array(this.#uint(2))
      case 0xdd: return this.#array(this.#uint(4))
      case 0xde: return this.#map(this.#uint(2))
      case 0xdf: return this.#map(this.#uint(4))
      default: throw new RangeError(`msgpack: unknown type byte 0x${code.toString(16)}`)
    }
  }

  #array (count: number): unknown[] {
    const array: unknown[] = []
    for (let i = 0; i < count; i++) array.push(this.value())
    return array
  }

  #map (count: number): Record<string, unknown> {
    const map: Record<string, unknown> = {}
    for (let i = 0; i < count; i++) {
      const key = String(this.value())
      // defineProperty, not assignment: a "__proto__" key must stay data, as it does with JSON.parse.
      Object.defineProperty(map, key, { value: this.value(), enumerable: true, writable: true, configurable: true })
    }
    return map
  }

  // A copy, not a view: the frame's buffer is not ours to pin (and Buffer's slice() would not copy).
  #binary (length: number): Uint8Array {
    return new Uint8Array(this.#take(length))
  }

  #string (length: number): string {
    return textDecoder.decode(this.#take(length))
  }

  #extension (length: number): unknown {
    const type = this.#at(1, (at) => this.#view.getInt8(at))
    if (type !== TIMESTAMP_EXT) throw new RangeError(`msgpack: unsupported extension type ${type}`)
    return this.#at(length, (at) => {
      if (length === 4) return new Date(this.#view.getUint32(at) * 1000)
      if (length === 8) {
        // 30 bits of nanoseconds, then 34 bits of seconds.
        const high = this.#view.getUint32(at)
        const seconds = (high & 0x3) * 0x100000000 + this.#view.getUint32(at + 4)
        return new Date(seconds * 1000 + Math.floor((high >>> 2) / 1_000_000))
      }
      if (length === 12) {
        const seconds = Number(this.#view.getBigInt64(at + 4))
        return new Date(seconds * 1000 + Math.floor(this.#view.getUint32(at) / 1_000_000))
      }
      throw new RangeError(`msgpack: bad timestamp length ${length}`)
    })
  }

  #uint (size: 1 | 2 | 4): number {
    return this.#at(size, (at) => size === 1 ? this.#view.getUint8(at) : size === 2 ? this.#view.getUint16(at) : this.#view.getUint32(at))
  }

  #take (length: number): Uint8Array {
    return this.#at(length, (at) => this.bytes.subarray(at, at + length))
  }

  #at<T> (size: number, read: (at: number) => T): T {
    if (this.offset + size > this.bytes.length) throw new RangeError('msgpack: truncated input')
    const at = this.offset
    this.offset += size
    return read(at)
  }
}

/** 64-bit integers come back as numbers when exact, as bigints otherwise. */
function safeNumber (value: bigint): number | bigint {
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value
}
