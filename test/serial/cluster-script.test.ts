import { randomUUID } from 'node:crypto'
import { connect } from 'amqplib'
import t from 'tap'
import { probe } from '../helpers/broker.js'
import { clusterUrls, declareReplicated, nodeName, nodeOfConnection, queueInfo, queueLeader, requireCluster, runningNodes, scriptStatus } from '../helpers/cluster.js'
import { waitFor } from '../helpers/wait.js'

// The local cluster of scripts/rabbitmq-cluster.sh, which the cluster tests of
// issue 12 run on: formed, reachable on each node, replicating quorum queues
// and streams to every node; and the helpers that tell where a connection or
// a queue leader is tell the truth. A node's stop and start is tested in
// test/amqp-cluster-faults.test.ts, the only file that stops nodes; this one is in
// test/serial, which tap runs alone, so that it never checks the cluster
// while that file has a node down.

const allNodes = [nodeName(1), nodeName(2), nodeName(3)]
const url = (n: number): string => clusterUrls[n - 1] as string

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
      const name = await declareReplicated(t, type, 3)
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
}
