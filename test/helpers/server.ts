import type { Test } from 'tap'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import WebSocket from 'ws'
import { pack, unpack } from 'msgpackr'
import eventSocket, { type EventSocketOptions } from '../../lib/index.js'

export const SECRET = 'test-secret-at-least-32-characters-long!'

export interface TestServer {
  app: FastifyInstance
  port: number
  url: string
  /** Signs a token; `expiresIn` defaults to one hour. */
  sign (claims: Record<string, unknown>, options?: { expiresIn?: string | number, notBefore?: string | number }): string
}

/** A listening app with the plugin registered; closed when the test ends. */
export async function startServer (
  t: Test, options: EventSocketOptions = {}, setup?: (app: FastifyInstance) => void | Promise<void>, logger: FastifyServerOptions['logger'] = false
): Promise<TestServer> {
  const app = Fastify({ logger })
  await app.register(eventSocket, { jwt: { secret: SECRET }, ...options })
  await setup?.(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return {
    app,
    port: address.port,
    url: `ws://127.0.0.1:${address.port}/events`,
    sign: (claims, signOptions) => app.jwt.sign(claims, { expiresIn: '1h', ...signOptions })
  }
}

export type Message = Record<string, any>

/** A raw `ws` client that records every message, for asserting the wire protocol exactly. */
export class TestClient {
  readonly ws: WebSocket
  readonly format: 'json' | 'msgpack'
  readonly messages: Message[] = []
  readonly opened: Promise<void>
  readonly closed: Promise<{ code: number, reason: string }>
  #waiters: Array<() => void> = []

  constructor (url: string, options: { token?: string, protocols?: string[], headers?: Record<string, string>, format?: 'json' | 'msgpack' } = {}) {
    this.format = options.format ?? 'json'
    const headers: Record<string, string> = { ...options.headers }
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
    const protocols = options.protocols ?? (this.format === 'msgpack' ? ['evsock.v1.msgpack'] : [])
    this.ws = new WebSocket(url, protocols, { headers })
    this.ws.on('message', (data: Buffer, isBinary) => {
      this.messages.push(isBinary ? unpack(data) : JSON.parse(data.toString()))
      for (const wake of this.#waiters.splice(0)) wake()
    })
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve())
      this.ws.once('error', reject)
    })
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        resolve({ code, reason: reason.toString() })
        for (const wake of this.#waiters.splice(0)) wake()
      })
    })
  }

  send (message: unknown): void {
    this.ws.send(this.format === 'msgpack' ? pack(message) : JSON.stringify(message))
  }

  /** Resolves with the first recorded message (from `from` on) that satisfies `match`. */
  async next (match: (message: Message) => boolean, { timeout = 2000, from = 0 } = {}): Promise<Message> {
    const deadline = Date.now() + timeout
    for (;;) {
      const found = this.messages.slice(from).find(match)
      if (found !== undefined) return found
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`socket closed while waiting; got ${JSON.stringify(this.messages)}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting; got ${JSON.stringify(this.messages)}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.#waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** Acks every event as soon as it arrives, as a client that keeps up does. */
  ackEach (): void {
    this.ws.on('message', () => {
      const last = this.messages.at(-1)
      if (last?.op === 'event') this.send({ op: 'ack', seq: last.seq })
    })
  }

  events (): Message[] {
    return this.messages.filter((message) => message.op === 'event')
  }

  /** Subscribes and waits for the answer (ok or error). */
  async subscribe (topic: string, id = nextId++): Promise<Message> {
    const from = this.messages.length
    this.send({ op: 'sub', id, topic })
    return await this.next((message) => message.id === id && (message.op === 'ok' || message.op === 'error'), { from })
  }

  close (): void {
    this.ws.close()
  }
}

let nextId = 1

/** Opens an authenticated client and waits for its hello. */
export async function openClient (t: Test, server: TestServer, options: { sub?: string, role?: string, format?: 'json' | 'msgpack', token?: string } = {}): Promise<TestClient> {
  const token = options.token ?? server.sign({ sub: options.sub ?? 'u1', role: options.role ?? 'admin' })
  const client = new TestClient(server.url, { token, format: options.format ?? 'json' })
  t.teardown(() => client.ws.terminate())
  await client.opened
  await client.next((message) => message.op === 'hello')
  return client
}

export interface Refusal {
  status: number
  body: Message
  upgraded: boolean
}

/** Attempts a handshake and reports the HTTP refusal; `upgraded` is true if the server opened the socket instead. */
export async function attemptHandshake (url: string, options: { protocols?: string[], headers?: Record<string, string> } = {}): Promise<Refusal> {
  return await new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options.protocols ?? [], { headers: options.headers })
    ws.on('unexpected-response', (_request, response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => {
        ws.terminate()
        resolve({ status: response.statusCode ?? 0, body: body.length > 0 ? JSON.parse(body) : {}, upgraded: false })
      })
    })
    ws.on('open', () => {
      ws.terminate()
      resolve({ status: 101, body: {}, upgraded: true })
    })
    ws.on('error', (err) => {
      if (!String(err.message).startsWith('Unexpected server response')) reject(err)
    })
  })
}

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
