import t, { type Test } from 'tap'
import { execFile, spawnSync } from 'node:child_process'
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

// The package as users get it: `npm pack` (prepack builds dist/), installed
// into a fresh app, once with npm's default hoisted layout and once with the
// isolated layout pnpm uses, where a package sees only what it declares.

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')

interface Manifest {
  dependencies: Record<string, string>
  devDependencies: Record<string, string>
}

interface Run { stdout: string, stderr: string }

/** Runs a command, bounded; the error names the command and carries its output. */
function run (command: string, args: string[], cwd: string, timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, NODE_OPTIONS: '' } }, (error, stdout, stderr) => {
      if (error === null) return resolve({ stdout, stderr })
      const why = error.killed ? `timed out after ${timeoutMs} ms` : `failed (${error.message.split('\n')[0]})`
      reject(new Error(`${command} ${args.join(' ')} in ${cwd} ${why}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`))
    })
  })
}

const npmVersion = spawnSync('npm', ['--version'], { encoding: 'utf8', timeout: 15_000 })
const npmMissing = npmVersion.status === 0 ? false : `npm is not available (${npmVersion.error?.message ?? npmVersion.stderr}): the pack-and-install check cannot run`
if (npmMissing !== false) t.comment(`SKIPPING: ${npmMissing}`)
// Packing builds the package and installs it twice: past the suite's 90 s default on a loaded machine.
t.setTimeout(300_000)

// An app that registers the installed plugin on the in-process bus, connects
// with the installed client over the installed `ws`, and receives one event.
const importCheck = `
import Fastify from 'fastify'
import eventSocket, { BadOptionError } from 'fastify-event-socket'
import { connect } from 'fastify-event-socket/client'
import { createRequire } from 'node:module'

// The plugin's own ws, the one it depends on: the app does not install ws,
// whose copy at the app's top level would hide a missing dependency.
const { WebSocket } = createRequire(import.meta.resolve('fastify-event-socket'))('ws')
const app = Fastify()
await app.register(eventSocket, { jwt: { secret: 'a-secret-of-at-least-thirty-two-characters' } })
await app.listen({ port: 0, host: '127.0.0.1' })
const client = connect({ url: 'ws://127.0.0.1:' + app.server.address().port + '/events', token: app.jwt.sign({ sub: 'u1' }), WebSocket })
const received = new Promise((resolve) => {
  const subscription = client.subscribe('user.u1.#', (event) => resolve(event))
  subscription.ready.then(() => app.publish('user.u1.hello', { n: 1 }))
})
const event = await received
await client.close()
await app.close()
console.log(JSON.stringify({ topic: event.topic, data: event.data, badOption: typeof BadOptionError }))
`

// CommonJS: require() of both entry points (Node 20.19+ loads ES modules
// without a flag), and registration of what require returns.
const requireCheck = `
const Fastify = require('fastify')
const plugin = require('fastify-event-socket')
const client = require('fastify-event-socket/client')

async function main () {
  const app = Fastify()
  await app.register(require('fastify-event-socket'), { jwt: { secret: 'a-secret-of-at-least-thirty-two-characters' } })
  await app.ready()
  const published = await app.publish('user.u1.hello', 1)
  await app.close()
  const esm = await import('fastify-event-socket')
  const named = Object.keys(esm).filter((name) => name !== 'default' && name !== 'module.exports')
  console.log(JSON.stringify({
    plugin: typeof plugin,
    sameModule: plugin === esm.default,
    default: plugin.default === plugin,
    missingNamed: named.filter((name) => plugin[name] !== esm[name]),
    named: named.length,
    connect: typeof client.connect,
    published: typeof published.id
  }))
}
main().catch((error) => { console.error(error); process.exit(1) })
`

// The installed types, as an ESM TypeScript app sees them.
const typesCheck = `
import Fastify from 'fastify'
import eventSocket, { BadOptionError, type EventSocketOptions, type EventSocketStats } from 'fastify-event-socket'
import { connect, type ReceivedEvent } from 'fastify-event-socket/client'

const options: EventSocketOptions = { jwt: { secret: 'x' }, broker: { url: 'amqp://localhost' }, window: 8 }
const app = Fastify()
await app.register(eventSocket, options)
const published: { id: string } = await app.publish('a.b', { n: 1 })
const stats: EventSocketStats = app.eventSocket.stats()
const error: Error = new BadOptionError('x', 'y')
const client = connect({ url: 'ws://x/events', getToken: async () => 't' })
client.subscribe('a.*', (event: ReceivedEvent) => { void event.topic })
export { published, stats, error }
`

function tsconfig (module: string, moduleResolution: string, skipLibCheck: boolean): string {
  return JSON.stringify({
    compilerOptions: { target: 'ES2022', module, moduleResolution, strict: true, noEmit: true, skipLibCheck, types: ['node'] },
    files: ['check.mts']
  })
}

t.test('the packed package installs and loads with npm (hoisted) and pnpm-style (linked) layouts', { skip: npmMissing, timeout: 300_000 }, async (t) => {
  const manifest = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as Manifest
  const dir = await mkdtemp(join(tmpdir(), 'evsock-pack-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))

  const packed = JSON.parse((await run('npm', ['pack', '--json', '--pack-destination', dir], root, 120_000)).stdout) as Array<{ filename: string }>
  const tarball = join(dir, packed[0]?.filename ?? '')
  // The app's own dependencies, at the versions this repository tests with;
  // not ws, which would hide from the plugin that it lacks its own.
  const versions = { ...manifest.dependencies, ...manifest.devDependencies }
  const install = [tarball, ...['fastify', '@types/node'].map((name) => `${name}@${versions[name] ?? 'latest'}`)]

  async function app (layout: 'linked' | 'hoisted'): Promise<string> {
    const cwd = join(dir, layout)
    await mkdir(cwd)
    await writeFile(join(cwd, 'package.json'), JSON.stringify({ name: `app-${layout}`, private: true }))
    await run('npm', ['install', `--install-strategy=${layout}`, '--prefer-offline', '--no-audit', '--no-fund', ...install], cwd, 120_000)
    await writeFile(join(cwd, 'import.mjs'), importCheck)
    await writeFile(join(cwd, 'require.cjs'), requireCheck)
    return cwd
  }
  const apps = await Promise.all([app('linked'), app('hoisted')])

  /** The JSON a check script printed, or a failure carrying its output. */
  async function output (t: Test, cwd: string, script: string, label: string): Promise<Record<string, unknown>> {
    try {
      return JSON.parse((await run(process.execPath, [script], cwd, 60_000)).stdout)
    } catch (error) {
      t.fail(`${label}: ${(error as Error).message}`)
      return {}
    }
  }

  for (const cwd of apps) {
    const layout = cwd.endsWith('linked') ? 'linked' : 'hoisted'
    const imported = await output(t, cwd, 'import.mjs', `${layout}: import`)
    t.same(imported, { topic: 'user.u1.hello', data: { n: 1 }, badOption: 'function' }, `${layout}: import, register, receive an event`)
    const required = await output(t, cwd, 'require.cjs', `${layout}: require`)
    t.match(required, {
      plugin: 'function',
      sameModule: true,
      default: true,
      missingNamed: [],
      connect: 'function',
      published: 'string'
    }, `${layout}: require of both entry points, registering what require returns`)
    t.ok(Number(required.named) > 10, `${layout}: the named exports were compared (${String(required.named)})`)
  }

  // Types, in the isolated layout, where a type package the declarations
  // need but the package does not depend on is missing. Library checks are
  // on for node16 (they report such a miss); bundler checks the resolution.
  const linked = apps[0] ?? ''
  await writeFile(join(linked, 'check.mts'), typesCheck)
  for (const [module, resolution, skipLibCheck] of [['node16', 'node16', false], ['esnext', 'bundler', true]] as const) {
    await writeFile(join(linked, `tsconfig.${resolution}.json`), tsconfig(module, resolution, skipLibCheck))
    await run(process.execPath, [tsc, '-p', `tsconfig.${resolution}.json`], linked, 120_000).then(
      () => t.pass(`types resolve with moduleResolution ${resolution}`),
      (error: Error) => t.fail(`types with moduleResolution ${resolution}: ${error.message}`)
    )
  }
})
