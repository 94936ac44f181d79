// The machine broker's management API, where it runs (.ci/run enables it):
// the broker commands the tests make most (listing bindings and queues,
// making vhosts, users and permissions) answered over HTTP in a millisecond,
// where each `rabbitmqctl` starts an Erlang VM that costs one to two seconds
// of CPU, a few hundred of them in a run of the suite on a two-core machine.
// Without the API every command goes to rabbitmqctl, as before.
//
// Only what the API answers at once is translated: connections are listed
// from statistics the broker gathers every few seconds, so listing and
// closing them stays with rabbitmqctl.

const base = new URL(process.env.RABBITMQ_MANAGEMENT_URL ?? 'http://guest:guest@127.0.0.1:15672')
const authorization = `Basic ${Buffer.from(`${decodeURIComponent(base.username)}:${decodeURIComponent(base.password)}`).toString('base64')}`
const origin = base.origin

let up: Promise<boolean> | undefined

/** Whether the API answers; asked once per test process. */
export function managementUp (): Promise<boolean> {
  up ??= fetch(`${origin}/api/overview`, { headers: { authorization }, signal: AbortSignal.timeout(2000) })
    .then((response) => response.ok, () => false)
  return up
}

/** One call; resolves with the parsed body (undefined when empty), rejects with the status and body otherwise. */
async function api (method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${origin}/api${path}`, {
    method,
    headers: { authorization, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(30_000)
  })
  const text = await response.text()
  if (!response.ok) throw new Error(`management API ${method} ${path}: ${response.status} ${text}`)
  return text === '' ? undefined : JSON.parse(text)
}

const segment = (name: string): string => encodeURIComponent(name)

/** `-p vhost` (or `--vhost vhost`) taken out of `args`, '/' when absent. */
function vhostOf (args: string[]): { vhost: string, rest: string[] } {
  const rest = [...args]
  const at = rest.findIndex((arg) => arg === '-p' || arg === '--vhost')
  if (at === -1) return { vhost: '/', rest }
  const [, vhost] = rest.splice(at, 2)
  return { vhost: vhost as string, rest }
}

/**
 * `rabbitmqctl -q ...args` through the API, printed as rabbitmqctl prints it
 * (tab-separated columns, a line a row); undefined when this command is not
 * translated or the API does not answer, for the caller to run rabbitmqctl.
 */
export async function viaManagement (args: string[]): Promise<string | undefined> {
  const { vhost, rest } = vhostOf(args.filter((arg) => arg !== '--quiet' && arg !== '--no-table-headers'))
  const [command, ...operands] = rest
  const translate = translations[command as string]
  if (translate === undefined || !await managementUp()) return undefined
  try {
    return await translate(vhost, operands)
  } catch {
    // The API can answer 500 to a listing while a queue is being deleted (seen in a CI run);
    // rabbitmqctl then does the command, and reports its own error if it has one.
    return undefined
  }
}

type Translation = (vhost: string, operands: string[]) => Promise<string | undefined>

const permissions = { configure: '.*', write: '.*', read: '.*' }

const translations: Record<string, Translation> = {
  list_bindings: async (vhost, columns) => {
    if (columns.join() !== 'source_name,destination_name,routing_key') return undefined
    const bindings = await api('GET', `/bindings/${segment(vhost)}?columns=source,destination,routing_key`) as Array<{ source: string, destination: string, routing_key: string }>
    return bindings.map((b) => `${b.source}\t${b.destination}\t${b.routing_key}\n`).join('')
  },
  list_queues: async (vhost, columns) => {
    if (columns.join() !== 'name') return undefined
    const queues = await api('GET', `/queues/${segment(vhost)}?columns=name`) as Array<{ name: string }>
    return queues.map((q) => `${q.name}\n`).join('')
  },
  add_vhost: async (_, [name]) => { await api('PUT', `/vhosts/${segment(name as string)}`, {}); return '' },
  delete_vhost: async (_, [name]) => { await api('DELETE', `/vhosts/${segment(name as string)}`); return '' },
  set_permissions: async (vhost, [user, configure, write, read]) => {
    if (configure !== permissions.configure || write !== permissions.write || read !== permissions.read) return undefined
    await api('PUT', `/permissions/${segment(vhost)}/${segment(user as string)}`, permissions)
    return ''
  },
  clear_permissions: async (vhost, [user]) => { await api('DELETE', `/permissions/${segment(vhost)}/${segment(user as string)}`); return '' },
  add_user: async (_, [user, password]) => { await api('PUT', `/users/${segment(user as string)}`, { password, tags: '' }); return '' },
  delete_user: async (_, [user]) => { await api('DELETE', `/users/${segment(user as string)}`); return '' }
}
