import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import WebSocket from 'ws'
import { connect, type ResumeResult } from '../lib/client/index.js'
import { brokerUrl, requireBroker } from './helpers/broker.js'
import { clusterOptions } from './helpers/instance.js'
import { waitFor, within } from './helpers/wait.js'

// docs/deploy.md, run: Debian's nginx with the configuration of that page in
// front of two instances of the example app (child processes) on RabbitMQ.
// The bundled client connects through nginx; the instance it is on is
// killed with SIGKILL; the client goes on through the other one, and, with
// history on (as in the example), gets every order, once, in order.

const NGINX = '/usr/sbin/nginx'
const SECRET = 'deploy-test-secret-at-least-32-characters!'

/** The nginx block of docs/deploy.md, as a reader copies it. */
function deployConfig (): string {
  const doc = readFileSync(new URL('../docs/deploy.md', import.meta.url), 'utf8')
  const block = /^```nginx\n([\s\S]*?)^```$/m.exec(doc)?.[1]
  if (block === undefined) throw new Error('docs/deploy.md has no ```nginx block')
  return block
}

/** The doc's placeholders, replaced: the only change the test makes to the configuration. */
function fill (config: string, values: Record<'__LISTEN__' | '__INSTANCE_A__' | '__INSTANCE_B__', string>): string {
  let filled = config
  for (const [placeholder, value] of Object.entries(values)) {
    if (!filled.includes(placeholder)) throw new Error(`the nginx block of docs/deploy.md has no ${placeholder}`)
    filled = filled.replaceAll(placeholder, value)
  }
  return filled
}

async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  await new Promise((resolve) => server.close(resolve))
  return address.port
}

interface ExampleProcess { port: number, healthPort: number, pid: number, kill: () => void, exited: Promise<unknown> }

/** `npm run example`'s server as a process of its own, configured by its environment; killed when the test ends. */
async function startExample (t: Test, env: Record<string, string>): Promise<ExampleProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'example/server.ts'], {
    cwd: process.cwd(),
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', HEALTH_PORT: '0', JWT_SECRET: SECRET, ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const exited = once(child, 'exit')
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => { out += chunk })
  let ports: { port: number, healthPort: number } | undefined
  await waitFor(() => {
    // The example logs pino lines; the one saying where it listens carries both ports.
    for (const line of out.split('\n')) {
      if (!line.includes('"healthPort"')) continue
      ports = JSON.parse(line) as { port: number, healthPort: number }
    }
    return ports !== undefined || child.exitCode !== null
  }, { what: 'the example to listen', timeoutMs: 30_000, detail: () => out })
  if (ports === undefined) throw new Error(`the example exited (${String(child.exitCode)}): ${out}`)
  return { port: ports.port, healthPort: ports.healthPort, pid: child.pid as number, kill: () => child.kill('SIGKILL'), exited }
}

async function health (example: ExampleProcess, path: string): Promise<{ status: number, body: { connections?: number, status?: string } }> {
  const response = await fetch(`http://127.0.0.1:${example.healthPort}${path}`, { signal: AbortSignal.timeout(5000) })
  return { status: response.status, body: await response.json() as { connections?: number } }
}

/** nginx as a child process, with its prefix, configuration, pid and logs in a temporary directory; stopped when the test ends. */
async function startNginx (t: Test, site: string): Promise<{ errors: () => string }> {
  const dir = await mkdtemp(join(tmpdir(), 'evsock-nginx-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'evsock.conf'), site)
  // The main configuration a distribution ships, cut to what runs unprivileged in a temporary
  // directory; docs/deploy.md's block is included in http { } as it is in conf.d.
  await writeFile(join(dir, 'nginx.conf'), [
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${dir}/${kind};`),
    `  include ${dir}/evsock.conf;`,
    '}',
    ''
  ].join('\n'))
  const child = spawn(NGINX, ['-p', `${dir}/`, '-e', `${dir}/error.log`, '-c', `${dir}/nginx.conf`, '-g', 'daemon off;'], { stdio: ['ignore', 'inherit', 'inherit'] })
  const exited = once(child, 'exit')
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM') // nginx's fast shutdown
    await within(exited, { what: 'nginx to stop', timeoutMs: 10_000 })
  })
  return { errors: () => existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : '' }
}

if (!existsSync(NGINX)) {
  const reason = `${NGINX} is missing (apt-get install -y nginx); .ci/run installs it`
  if (process.env.CI === 'true') {
    t.fail(`the nginx deployment test cannot run: ${reason}`)
  } else {
    process.stderr.write(`\n!!!!!!!!\n!!! SKIPPING the nginx deployment test: ${reason}\n!!!!!!!!\n\n`)
    t.test('deployment behind nginx', { skip: reason }, async () => {})
  }
} else {
  t.test('behind nginx with the configuration of docs/deploy.md, the client goes on through the other instance when its own is killed, and loses nothing', async (t) => {
    if (!await requireBroker(t)) return
    // An exchange of the test's own; its history stream is deleted with it.
    const exchange = clusterOptions(t).broker?.exchange as string
    const env = { AMQP_URL: brokerUrl, AMQP_EXCHANGE: exchange }
    const instances = await Promise.all([startExample(t, env), startExample(t, env)])
    for (const instance of instances) {
      await waitFor(async () => (await health(instance, '/health/ready')).status === 200, { what: `instance ${instance.pid} to be ready`, timeoutMs: 15_000 })
    }
    const [a, b] = instances as [ExampleProcess, ExampleProcess]
    const listen = await freePort()
    const nginx = await startNginx(t, fill(deployConfig(), {
      __LISTEN__: `127.0.0.1:${listen}`,
      __INSTANCE_A__: `127.0.0.1:${a.port}`,
      __INSTANCE_B__: `127.0.0.1:${b.port}`
    }))
    const site = `http://127.0.0.1:${listen}`
    await waitFor(async () => (await fetch(`${site}/`).catch(() => undefined))?.status === 200, {
      what: 'nginx to serve the example page', timeoutMs: 15_000, detail: nginx.errors
    })

    const post = async (path: string, body: unknown): Promise<Record<string, unknown>> => {
      const response = await fetch(`${site}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) })
      if (response.status >= 300) throw new Error(`POST ${path} through nginx answered ${response.status}: ${await response.text()}`)
      return await response.json() as Record<string, unknown>
    }
    const client = connect({
      url: `ws://127.0.0.1:${listen}/events`,
      getToken: async () => (await post('/demo/token', { user: 'watcher' })).token as string,
      WebSocket,
      reconnect: { initialDelayMs: 50, maxDelayMs: 500 }
    })
    t.teardown(() => client.close())
    const seen: string[] = []
    const resumes: ResumeResult[] = []
    client.on('resume', (result) => { resumes.push(result) })
    await within(client.subscribe('orders.*', (event) => { seen.push((event.data as { item: string }).item) }).ready, { what: 'the subscription through nginx' })

    const published: string[] = []
    const order = async (item: string): Promise<void> => {
      await post('/orders', { item })
      published.push(item)
    }
    for (let n = 0; n < 5; n++) await order(`before-${n}`)
    await waitFor(() => seen.length >= published.length, { what: 'the orders before the kill', detail: () => JSON.stringify(seen) })

    const counts = await Promise.all(instances.map(async (instance) => (await health(instance, '/health/live')).body.connections))
    const holding = instances[counts.indexOf(1)]
    t.same(counts.sort(), [0, 1], 'the client is on one instance')
    if (holding === undefined) return
    const other = holding === a ? b : a
    holding.kill()
    await within(holding.exited, { what: 'the killed instance to exit' })
    // Published while the client finds its way to the other instance, and after.
    for (let n = 0; n < 10; n++) await order(`after-${n}`)
    await waitFor(async () => (await health(other, '/health/live')).body.connections === 1, { what: 'the client to reconnect to the other instance', timeoutMs: 15_000 })
    await order('sentinel')
    await waitFor(() => seen.includes('sentinel') || seen.length > published.length, {
      what: 'the sentinel through the other instance', timeoutMs: 15_000, detail: () => `seen ${JSON.stringify(seen)}, nginx: ${nginx.errors()}`
    })
    t.same(seen, published, 'every order published, before and after the kill, reached the client once, in order')
    t.ok(resumes.length > 0 && resumes.every((result) => result.recovered), 'the client resumed on the other instance with nothing missing')
    t.equal((await health(other, '/health/ready')).status, 200, 'the instance left is ready')
  })
}
