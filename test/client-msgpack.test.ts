import t from 'tap'
import { Packr, Unpackr } from 'msgpackr'
import { decode, encode } from '../lib/client/msgpack.js'

// The client's codec against msgpackr, the server's, in both directions and
// with msgpackr set up as lib/codec.ts sets it up (plain maps, no records).
const packr = new Packr({ useRecords: false, variableMapSize: true })
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' })

const samples: Record<string, unknown> = {
  null: null,
  booleans: [true, false],
  'positive fixint edges': [0, 1, 127],
  'negative fixint edges': [-1, -32],
  'uint 8/16/32 edges': [128, 255, 256, 65535, 65536, 4294967295],
  'int 8/16/32 edges': [-33, -128, -129, -32768, -32769, -2147483648],
  'beyond 32 bits': [4294967296, Number.MAX_SAFE_INTEGER, -2147483649, Number.MIN_SAFE_INTEGER],
  floats: [0.5, -1.25, 3.141592653589793, 1e300],
  strings: ['', 'a', 'x'.repeat(31), 'x'.repeat(32), 'y'.repeat(255), 'z'.repeat(256), 'w'.repeat(70000), 'héllo ✓ 𝄞'],
  nested: { op: 'event', seq: 7, topic: 'orders.created', id: 'abc', data: { items: [{ sku: 'A-1', qty: 2 }], note: null, ok: true } },
  'long array': Array.from({ length: 20 }, (_, i) => i),
  'big array': Array.from({ length: 70000 }, (_, i) => i % 3),
  'wide map': Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
  'huge map': Object.fromEntries(Array.from({ length: 70000 }, (_, i) => [`k${i}`, i]))
}

t.test('client encode -> msgpackr decode', async (t) => {
  for (const [name, value] of Object.entries(samples)) t.same(unpackr.unpack(Buffer.from(encode(value))), value, name)
})

t.test('msgpackr encode -> client decode', async (t) => {
  for (const [name, value] of Object.entries(samples)) t.same(decode(packr.pack(value)), value, name)
})

t.test('binary, bigint and dates', async (t) => {
  const bytes = Uint8Array.from([0, 1, 2, 255])
  t.same(unpackr.unpack(Buffer.from(encode(bytes))), Buffer.from(bytes))
  t.same(decode(packr.pack(Buffer.from(bytes))), bytes)
  t.same(decode(packr.pack(new Uint8Array(300))), new Uint8Array(300), 'bin16')

  const big = 2n ** 63n + 5n
  t.equal(decode(encode(big)), big, 'unsafe uint64 stays a bigint')
  t.equal(decode(encode(-(2n ** 62n))), -(2n ** 62n), 'unsafe int64 stays a bigint')
  t.equal(decode(encode(12n)), 12, 'a safe bigint comes back as a number')

  for (const date of [new Date('2024-05-06T07:08:09.123Z'), new Date(0), new Date('1960-01-01T00:00:00.500Z'), new Date(2 ** 33 * 1000 + 1)]) {
    t.same(unpackr.unpack(Buffer.from(encode(date))), date, `client date ${date.toISOString()}`)
    t.same(decode(packr.pack(date)), date, `msgpackr date ${date.toISOString()}`)
  }
})

t.test('float32 from other encoders', async (t) => {
  t.equal(decode(Uint8Array.of(0xca, 0x3f, 0xc0, 0x00, 0x00)), 1.5)
})

t.test('undefined properties are left out, as JSON does', async (t) => {
  t.same(decode(encode({ a: 1, b: undefined })), { a: 1 })
})

t.test('a "__proto__" key stays plain data', async (t) => {
  const decoded = decode(packr.pack(JSON.parse('{"__proto__":{"polluted":true}}'))) as Record<string, unknown>
  t.equal(({} as Record<string, unknown>).polluted, undefined)
  t.equal(Object.getPrototypeOf(decoded), Object.prototype)
  t.same(Object.keys(decoded), ['__proto__'])
})

t.test('decodes from an ArrayBuffer and from a view into a larger buffer', async (t) => {
  const packed = packr.pack({ a: [1, 'x'] })
  const arrayBuffer = new Uint8Array(packed).buffer
  t.same(decode(arrayBuffer), { a: [1, 'x'] })
  const padded = new Uint8Array(packed.length + 10)
  padded.set(packed, 5)
  t.same(decode(padded.subarray(5, 5 + packed.length)), { a: [1, 'x'] })
})

t.test('malformed input throws', async (t) => {
  t.throws(() => decode(Uint8Array.of(0xc1)), /unknown type byte/)
  t.throws(() => decode(Uint8Array.of(0xa5, 0x61)), /truncated/)
  t.throws(() => decode(Uint8Array.of(0x01, 0x02)), /trailing bytes/)
  t.throws(() => decode(Uint8Array.of(0xd4, 0x05, 0x00)), /unsupported extension/)
  t.throws(() => decode(Uint8Array.of(0xa2, 0xff, 0xfe)), 'invalid UTF-8')
  t.throws(() => encode(() => 1), /cannot encode a function/)
})
