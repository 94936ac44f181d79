import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { promisify } from 'node:util'
import { connect } from 'amqplib'
import t, { type Test } from 'tap'
import { probe, withChannel } from './helpers/broker.js'
import { clusterScript, clusterUrls, nodeName, nodeOfConnection, queueInfo, queueLeader, requireCluster, runningNodes, startNode, stopNode } from './helpers/cluster.js'
import { waitFor } from './helpers/wait.js'

// The local cluster of scripts/rabbitmq-cluster.sh, which the cluster tests of
// issue 12 run on: formed, reachable on each node, replicating quorum queues
// and streams to every node, surviving a node's stop and start; and the
// helpers that tell where a connection or a queue leader is tell the truth.

const run = promisify(execFile)
const allNodes = [nodeName(1), nodeName(2), nodeName(3)]
const url = (n: number): string => clusterUrls[n - 1] as string

/** Declares a quorum queue or stream through node N (which then leads it), deleted when the test ends. */
async function declare (t: Test, type: 'quorum' | 'stream', n: number): Promise<string> {
  const name = `evsock.test.cluster.${type}.${randomUUID()}`
  await withChannel(url(n), (channel) => channel.assertQueue(name, {
    durable: true,
    arguments: { 'x-queue-type': type, 'x-queue-leader-locator': 'client-local' }
  }))
  // Through rc1, which this file never stops.
  t.teardown(() => withChannel(url(1), (channel) => channel.deleteQueue(name)))
  return name
}

async function scriptStatus (): Promise<{ code: number, stdout: string }> {
  try {
    const { stdout } = await run('bash', [clusterScript, 'status'], { timeout: 30_000 })
    return { code: 0, stdout }
  } catch (error) {
    const { code, stdout } = error as { code: number, stdout: string }
    return { code, stdout }
  }
}

if (await requireCluster(t)) {
  t.test('the script formed one cluster of three running nodes', async (t) => {
    t.same(await runningNodes(), allNodes, 'rc1, rc2 and rc3 run, in one cluster')
    const status = await scriptStatus()
    t.equal(status.code, 0, '`status` exits 0')
    t.same(status.stdout.trim().split('\n'), allNodes, '`status` lists the three nodes')
  })

  t.test('each node\'s URL takes an AMQP connection', async (t) => {
    t.equal(clusterUrls.length, 3, 'three URLs')
    for (const [i, nodeUrl] of clusterUrls.entries()) t.equal(await probe(nodeUrl), undefined, `node ${i + 1} (${new URL(nodeUrl).port}) answers`)
  })

  for (const type of ['quorum', 'stream'] as const) {
    t.test(`a ${type} queue declared through rc3 has a member on every node and is led by rc3`, async (t) => {
      const name = await declare(t, type, 3)
      const info = await queueInfo(name)
      t.equal(info.type, type, `declared as ${type}`)
      t.same([...info.members].sort(), allNodes, 'a member on each node')
      await waitFor(async () => [...(await queueInfo(name)).online].sort().join() === allNodes.join(), { what: `every member of ${name} online` })
      t.equal(await queueLeader(name), nodeName(3), 'queueLeader names the declaring node (client-local locator)')
    })
  }

  t.test('nodeOfConnection names the node a connection went to', async (t) => {
    const connectionName = `evsock test connection ${randomUUID()}`
    const connection = await connect(url(2), { clientProperties: { connection_name: connectionName }, timeout: 5000 })
    t.teardown(() => connection.close())
    t.equal(await nodeOfConnection(connectionName), nodeName(2), 'the connection to port 5682 is on rc2')
    t.equal(await nodeOfConnection(`${connectionName} never opened`), undefined, 'undefined for a name no connection has')
  })

  t.test('stop-node 3 takes rc3 out of the cluster, start-node 3 brings it back', async (t) => {
    const name = await declare(t, 'quorum', 3)
    t.equal(await queueLeader(name), nodeName(3), 'rc3 leads the queue before the stop')
    // Whatever fails below, rc3 runs again afterwards (start-node is a no-op on a running node).
    t.teardown(() => startNode(3))

    await stopNode(3)
    t.same(await runningNodes(), [nodeName(1), nodeName(2)], 'rc1 and rc2 still run')
    t.not(await probe(url(3)), undefined, 'rc3\'s port takes no connection')
    const stopped = await scriptStatus()
    t.not(stopped.code, 0, '`status` exits non-zero with a node down')
    let leader = ''
    await waitFor(async () => (leader = await queueLeader(name)) !== nodeName(3), { what: `a new leader of ${name}`, timeoutMs: 20_000, intervalMs: 200, detail: () => `leader ${leader}` })
    t.ok([nodeName(1), nodeName(2)].includes(leader), `queueLeader follows the election to ${leader}`)

    await startNode(3)
    t.same(await runningNodes(), allNodes, 'rc3 runs in the cluster again')
    t.equal(await probe(url(3)), undefined, 'rc3 takes connections again')
    t.same([...(await queueInfo(name)).members].sort(), allNodes, 'rc3 is still a member of the queue')
    await waitFor(async () => (await queueInfo(name)).online.includes(nodeName(3)), { what: `rc3's replica of ${name} back online`, timeoutMs: 20_000, intervalMs: 200 })
    t.equal((await scriptStatus()).code, 0, '`status` exits 0 again')
  })
}
