import { createServer, type Server } from 'node:http'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { pathToFileURL } from 'node:url'
import Fastify, { type FastifyInstance } from 'fastify'
import eventSocket, { defaultAuthorize, METRICS_CONTENT_TYPE, type Authorize, type EventSocketOptions } from '../lib/index.js'
import { clientModules } from './client-module.js'
import { loadPublicFiles } from './static.js'

// The example app: a page that signs in, subscribes and shows a live feed,
// the routes that publish to it, and health endpoints on their own port.
// `npm run example` runs it; the tests build it in-process with buildExample.

export interface ExampleOptions {
  /** HTTP and WebSocket port; 0 picks a free one. */
  port: number
  /** Port of the health endpoint; 0 picks a free one. Kept off the WebSocket port, so probes never share its limits. */
  healthPort: number
  host?: string
  jwtSecret: string
  /** RabbitMQ URL, or the URLs of a cluster's nodes; without it the in-process bus (one instance only). */
  amqpUrl?: string | string[]
  /** The exchange every instance shares on RabbitMQ; the plugin's default ('evsock.events') without it. */
  amqpExchange?: string
  logger?: boolean
  /** Plugin options to override, for tests. */
  eventSocket?: Omit<EventSocketOptions, 'jwt' | 'broker' | 'authorize'>
}

export interface Example {
  app: FastifyInstance
  port: number
  healthPort: number
  /** http://host:port of the page. */
  url: string
  close (): Promise<void>
}

/** Anyone signed in may follow orders; user topics stay private (the plugin's default rule). */
const authorize: Authorize = (user, pattern, request) =>
  pattern === 'orders' || pattern.startsWith('orders.') || defaultAuthorize(user, pattern, request)

const userId = { type: 'string', pattern: '^[A-Za-z0-9_-]{1,32}$' } as const

export async function buildExample (options: ExampleOptions): Promise<Example> {
  const host = options.host ?? '127.0.0.1'
  const app = Fastify({ logger: options.logger ?? false })
  if (options.amqpUrl === undefined) {
    app.log.info('broker: in-process bus (set AMQP_URL to run several instances on RabbitMQ)')
  } else {
    app.log.info({ broker: [options.amqpUrl].flat().map(redact).join(',') }, 'broker: RabbitMQ')
  }

  await app.register(eventSocket, {
    // A reconnecting page resumes where it was, instead of missing what was published meanwhile.
    history: true,
    // Prometheus metrics, served on the health port's /metrics (prom-client is installed with the example).
    metrics: true,
    ...options.eventSocket,
    jwt: { secret: options.jwtSecret },
    // A list of node URLs is passed as it is: broker.url takes lists for a cluster (issue 12), its type catches up in lib/.
    broker: { url: options.amqpUrl, ...(options.amqpExchange === undefined ? {} : { exchange: options.amqpExchange }) },
    authorize
  })

  // DEMO ONLY, NOT FOR PRODUCTION: hands a token to anyone for any name. A real
  // app issues tokens from its own login, after checking who the user is.
  app.post('/demo/token', {
    schema: { body: { type: 'object', required: ['user'], properties: { user: userId } } }
  }, async (request) => {
    const { user } = request.body as { user: string }
    return { token: app.jwt.sign({ sub: user, role: 'user' }, { expiresIn: '5m' }) }
  })

  // Demo routes without authentication, to keep the example short; a real app
  // would authenticate them like any other route.
  app.post('/orders', {
    schema: {
      body: {
        type: 'object',
        properties: { item: { type: 'string', minLength: 1, maxLength: 100 }, quantity: { type: 'integer', minimum: 1, maximum: 1000 } }
      }
    }
  }, async (request, reply) => {
    const body = (request.body ?? {}) as { item?: string, quantity?: number }
    const order = { id: randomUUID(), item: body.item ?? 'coffee', quantity: body.quantity ?? 1, createdAt: new Date().toISOString() }
    await app.publish('orders.created', order)
    return reply.code(201).send(order)
  })

  app.post('/users/:id/notify', {
    schema: {
      params: { type: 'object', properties: { id: userId } },
      body: { type: 'object', required: ['message'], properties: { message: { type: 'string', minLength: 1, maxLength: 500 } } }
    }
  }, async (request, reply) => {
    const { id } = request.params as { id: string }
    const { message } = request.body as { message: string }
    const { id: eventId } = await app.publish(`user.${id}.notifications`, { message, at: new Date().toISOString() })
    return reply.code(202).send({ id: eventId })
  })

  const modules = await clientModules()
  app.get('/client/:file', async (request, reply) => {
    const source = modules.get((request.params as { file: string }).file)
    if (source === undefined) return reply.callNotFound()
    return reply.type('text/javascript; charset=utf-8').send(source)
  })

  const files = await loadPublicFiles()
  app.get('/:file?', async (request, reply) => {
    const file = files.get((request.params as { file?: string }).file ?? 'index.html')
    if (file === undefined) return reply.callNotFound()
    return reply.type(file.type).send(file.body)
  })

  // Hooks cannot be added once listening, so the health server comes first.
  const health = await listenHealth(app, options.healthPort, host)
  app.addHook('onClose', async () => { await closeServer(health) })
  try {
    await app.listen({ port: options.port, host })
  } catch (error) {
    await app.close()
    throw error
  }
  const port = portOf(app.server)
  return { app, port, healthPort: portOf(health), url: `http://${host}:${port}`, close: () => app.close() }
}

/** A health route's answer: JSON, unless it names its own content type (then `body` is the text). */
interface HealthAnswer { status: number, body: unknown, type?: string }

const answer = (health: { status: string }): HealthAnswer => ({ status: health.status === 'ok' ? 200 : 503, body: health })

/** The health port's routes, by path. */
const healthRoutes: Record<string, (app: FastifyInstance) => HealthAnswer | Promise<HealthAnswer>> = {
  // Liveness, cheap: 200 while the process answers, whatever the broker's state. The bus
  // reconnects by itself, so a restart would not help; readiness takes the instance out meanwhile.
  '/health/live': (app) => ({ status: 200, body: app.eventSocket.health() }),
  // Readiness: a probe through the broker and back to this instance (at most probeTimeoutMs); 503 when it did not come back.
  '/health/ready': async (app) => answer(await app.eventSocket.health({ probe: true })),
  // The older single endpoint: 200 while the broker connection is up, 503 otherwise.
  '/health': (app) => answer(app.eventSocket.health()),
  '/metrics': async (app) => ({ status: 200, body: await app.eventSocket.metrics(), type: METRICS_CONTENT_TYPE })
}

/** The health routes on their own port, kept off the WebSocket port. */
async function listenHealth (app: FastifyInstance, port: number, host: string): Promise<Server> {
  const server = createServer((request, response) => {
    const route = request.method === 'GET' ? healthRoutes[request.url ?? ''] : undefined
    if (route === undefined) {
      response.writeHead(404).end()
      return
    }
    Promise.resolve(route(app)).then(({ status, body, type }) => {
      response.writeHead(status, { 'content-type': type ?? 'application/json' })
      response.end(type === undefined ? JSON.stringify(body) : String(body))
    }, (error: unknown) => {
      app.log.error({ err: error, url: request.url }, 'health route failed')
      response.writeHead(500).end()
    })
  })
  server.listen(port, host)
  await once(server, 'listening')
  return server
}

async function closeServer (server: Server): Promise<void> {
  await new Promise<void>((resolve, reject) => server.close((error) => error === undefined ? resolve() : reject(error)))
}

function portOf (server: Server): number {
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('server is not listening on TCP')
  return address.port
}

function redact (url: string): string {
  const parsed = new URL(url)
  if (parsed.password !== '') parsed.password = '***'
  return parsed.href
}

/** AMQP_URL: one URL, or a cluster's node URLs separated by commas (`npm run example:cluster`). */
function amqpUrls (value: string | undefined): string | string[] | undefined {
  if (value === undefined || !value.includes(',')) return value
  return value.split(',').map((url) => url.trim()).filter((url) => url !== '')
}

const DEV_SECRET = 'dev-only-secret-do-not-use-in-production-0123456789'

async function main (): Promise<void> {
  const port = Number(process.env.PORT ?? 3000)
  const example = await buildExample({
    port,
    // PORT=0 picks a free port, and so does the health port then.
    healthPort: Number(process.env.HEALTH_PORT ?? (port === 0 ? 0 : port + 1)),
    host: process.env.HOST ?? '127.0.0.1',
    jwtSecret: process.env.JWT_SECRET ?? DEV_SECRET,
    amqpUrl: amqpUrls(process.env.AMQP_URL),
    amqpExchange: process.env.AMQP_EXCHANGE,
    logger: true
  })
  if (process.env.JWT_SECRET === undefined) {
    example.app.log.warn('!!! JWT_SECRET is not set: tokens are signed with a PUBLIC development secret. NEVER run like this in production. !!!')
  }
  const { port: listening, healthPort } = example
  example.app.log.info({ port: listening, healthPort }, `open ${example.url}/ ; health on http://127.0.0.1:${healthPort}/health/live and /health/ready, metrics on /metrics`)
  // docs/deploy.md, "Shutdown": app.close() closes the sockets with 1001 and drains the bus, within a deadline.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      const deadline = setTimeout(() => process.exit(1), 10_000)
      deadline.unref()
      example.close().then(() => process.exit(0), (err: unknown) => {
        example.app.log.error({ err }, 'shutdown failed')
        process.exit(1)
      })
    })
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main()
