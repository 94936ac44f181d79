import { createHmac } from 'node:crypto'
import t from 'tap'
import type { FastifyRequest } from 'fastify'
import { startServer, TestClient, type Message } from './helpers/server.js'

// Red-team attack on tokens verified through a Proxy of the upgrade request
// (lib/tokens.ts `carrying`): a function `secret` and the `trusted` hook must
// see the request's own URL, headers, query and decorations, with the token in
// Authorization wherever it came from (header, subprotocol, query); and what
// jwtVerify writes (request.user) must stay on the view: never the real
// request, not at the handshake, not on an in-band refresh, not with a
// refresh token of another user.

const KEYS: Record<string, string> = { acme: 'acme-secret-at-least-32-characters-long!!', umbrella: 'umbrella-secret-at-least-32-characters-long' }
const base64url = (text: string): string => Buffer.from(text).toString('base64url')

function token (tenant: string, claims: Record<string, unknown>): string {
  const head = `${base64url('{"alg":"HS256","typ":"JWT"}')}.${base64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims }))}`
  return `${head}.${createHmac('sha256', KEYS[tenant] as string).update(head).digest('base64url')}`
}

interface Seen { url: string, tenant: unknown, decorated: unknown, query: unknown, authorization: unknown, user: unknown }

declare module 'fastify' {
  interface FastifyRequest { tenantFromHook?: string }
}

t.test('a function secret and the trusted hook see the real request through the view, for every token source and the refresh', async (t) => {
  const seen: Seen[] = []
  const trustedSaw: Seen[] = []
  const authorizeSaw: unknown[] = []
  const upgrades: FastifyRequest[] = []
  const look = (request: FastifyRequest): Seen => ({
    url: request.url,
    tenant: request.headers['x-tenant'],
    decorated: request.tenantFromHook,
    query: (request.query as Record<string, unknown> | undefined)?.room,
    authorization: typeof request.headers.authorization === 'string' ? request.headers.authorization.slice(0, 7) : undefined,
    user: (request as unknown as { user?: unknown }).user
  })
  const server = await startServer(t, {
    allowQueryToken: true,
    handshakesPerMinute: 1000,
    authorize: (_user, _pattern, request) => {
      authorizeSaw.push((request as unknown as { user?: unknown }).user)
      return true
    },
    jwt: {
      secret: async (request: FastifyRequest) => {
        seen.push(look(request))
        return KEYS[request.headers['x-tenant'] as string] ?? 'no-tenant-secret-at-least-32-characters!!'
      },
      trusted: async (request: FastifyRequest) => {
        trustedSaw.push(look(request))
        return true
      }
    }
  }, (app) => {
    app.decorateRequest('tenantFromHook', undefined)
    app.addHook('onRequest', async (request) => {
      request.tenantFromHook = `hook:${String(request.headers['x-tenant'])}`
      if (request.url.startsWith('/events')) upgrades.push(request)
    })
  })

  const open = async (how: 'header' | 'protocol' | 'query', tenant: string, sub: string): Promise<TestClient> => {
    const jwt = token(tenant, { sub, role: 'user', marker: `handshake-${how}` })
    const headers: Record<string, string> = { 'x-tenant': tenant, ...(how === 'header' ? { authorization: `Bearer ${jwt}` } : {}) }
    const url = `${server.url}?room=r-${how}${how === 'query' ? `&access_token=${jwt}` : ''}`
    const client = new TestClient(url, { headers, ...(how === 'protocol' ? { protocols: ['evsock.v1.json', `bearer.${jwt}`] } : {}) })
    t.teardown(() => client.ws.terminate())
    const hello = await client.next((message) => message.op === 'hello' || message.op === 'error', { timeout: 5000 }).catch((error: Error) => ({ op: 'failed', error: error.message }) as Message)
    t.equal(hello.op, 'hello', `${how} (${tenant}): the handshake passed (${JSON.stringify(hello).slice(0, 200)})`)
    return client
  }

  const clients = { header: await open('header', 'acme', 'alice'), protocol: await open('protocol', 'umbrella', 'bob'), query: await open('query', 'acme', 'carol') }
  for (const [how, tenant] of [['header', 'acme'], ['protocol', 'umbrella'], ['query', 'acme']] as const) {
    const match = { url: new RegExp(`^/events\\?room=r-${how}`), tenant, decorated: `hook:${tenant}`, query: `r-${how}`, authorization: 'Bearer ' }
    t.match(seen.find((entry) => entry.query === `r-${how}`), match, `${how}: the secret saw the request's own URL, header, query, decoration, and the token in Authorization`)
    t.match(trustedSaw.find((entry) => entry.query === `r-${how}`), match, `${how}: so did trusted`)
  }

  // In-band refreshes: the same user with new claims, then another user's token.
  const alice = clients.header
  alice.send({ op: 'auth', id: 1, token: token('acme', { sub: 'alice', role: 'user', marker: 'refresh-same' }) })
  t.equal((await alice.next((message) => message.id === 1)).op, 'ok', 'a refresh of the same user passes')
  alice.send({ op: 'auth', id: 2, token: token('acme', { sub: 'mallory', role: 'admin', marker: 'refresh-other' }) })
  const other = await alice.next((message) => message.id === 2)
  t.match(other, { op: 'error', code: 'BAD_TOKEN' }, 'another user\'s token is refused on refresh')
  t.equal(seen.filter((entry) => entry.url.includes('r-header')).length, 3, 'the secret ran for the handshake and both refreshes, with the upgrade request')

  t.equal(upgrades.length, 3, 'three upgrade requests')
  for (const request of upgrades) {
    const user = (request as unknown as { user?: unknown }).user
    t.notOk(user !== undefined && user !== null, `the real upgrade request of ${request.url} carries no user written by jwtVerify (${JSON.stringify(user)})`)
    if (!request.url.includes('r-header')) t.equal(request.headers.authorization, undefined, `${request.url}: no Authorization written onto the real request`)
  }
  // authorize sees the real request too: no claims of any token on it, least of all mallory's.
  await alice.subscribe('after.refresh')
  t.notOk(authorizeSaw.some((user) => JSON.stringify(user ?? null).includes('mallory')), 'authorize never saw another user\'s claims on the request')
  await server.app.publish('after.refresh', { still: 'alice' })
  const event = await alice.next((message) => message.op === 'event' && message.topic === 'after.refresh', { timeout: 5000 })
  t.same(event.data, { still: 'alice' }, 'the connection still works as alice after the refused refresh')
})
