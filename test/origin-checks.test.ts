import t from 'tap'
import { attemptHandshake, startServer } from './helpers/server.js'

// Cross-site WebSocket hijacking and the query token. A browser sends
// the page's Origin with every WebSocket handshake and no CORS check applies,
// so the allow-list is the only thing between a hostile page and the endpoint.
// handshake.test.ts covers a foreign origin, an allowed one and a missing one;
// here, origins that only look like the allowed one.

t.test('origins that merely resemble an allowed one are refused with 403', async (t) => {
  const server = await startServer(t, { origins: ['https://app.example'] })
  const authorization = `Bearer ${server.sign({ sub: 'u1' })}`
  for (const origin of [
    'https://app.example.evil.example', 'https://evil-app.example', 'http://app.example', 'https://APP.EXAMPLE',
    'https://app.example:8443', 'https://app.example/', 'null', 'https://app.example, https://evil.example', ''
  ]) {
    const refusal = await attemptHandshake(server.url, { headers: { authorization, origin } })
    t.equal(refusal.status, 403, `${JSON.stringify(origin)}: 403`)
    t.equal(refusal.body.code, 'FST_EVSOCK_FORBIDDEN_ORIGIN', JSON.stringify(origin))
  }
  t.equal((await attemptHandshake(server.url, { headers: { authorization, origin: 'https://app.example' } })).status, 101)
})

t.test('a function allow-list decides alone, and is asked before the token is verified', async (t) => {
  const asked: Array<string | undefined> = []
  const server = await startServer(t, { origins: (origin) => { asked.push(origin); return origin?.endsWith('.trusted.example') === true } })
  t.equal((await attemptHandshake(server.url, { headers: { authorization: `Bearer ${server.sign({ sub: 'u1' })}`, origin: 'https://a.trusted.example' } })).status, 101)
  const refusal = await attemptHandshake(server.url, { headers: { authorization: 'Bearer garbage', origin: 'https://evil.example' } })
  t.equal(refusal.body.code, 'FST_EVSOCK_FORBIDDEN_ORIGIN', 'a hostile page learns nothing about tokens')
  t.same(asked, ['https://a.trusted.example', 'https://evil.example'])
})

t.test('with the default options a query token is not accepted', async (t) => {
  const server = await startServer(t)
  const refusal = await attemptHandshake(`${server.url}?access_token=${server.sign({ sub: 'u1' })}`)
  t.equal(refusal.status, 401)
  t.equal(refusal.body.code, 'FST_EVSOCK_NO_TOKEN')
})
