// Settings every process of a run agrees on.

/** HS256 secret shared by the servers (verification) and the generators (signing). */
export const SECRET = 'fastify-event-socket-bench-secret-0123456789'
/** Topic (and Socket.IO room) of the fan-out scenarios. */
export const FANOUT_TOPIC = 'bench.fanout'
/** Where the local brokers listen. */
export const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672'
/**
 * The nodes of the local three-node cluster (scripts/rabbitmq-cluster.sh, its
 * `urls`), for the cluster scenario; the machine's own node stays on AMQP_URL.
 */
export const CLUSTER_URLS = (process.env.AMQP_CLUSTER_URLS ?? 'amqp://guest:guest@127.0.0.1:5681,amqp://guest:guest@127.0.0.1:5682,amqp://guest:guest@127.0.0.1:5683').split(',')
/** An AMQP URL's port. */
export const portOf = (url: string): number => Number(new URL(url).port || 5672)
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
/** Exchange and Redis key of the bench, so that tests running on the same brokers never see its traffic. */
export const BENCH_EXCHANGE = 'evsock.bench'
export const BENCH_REDIS_KEY = 'bench-socket.io'
/** Cores: servers on one, load generators on the other (2-core machine). */
export const SERVER_CORE = 0
export const GENERATOR_CORE = 1
/** Sockets per generator process: well under the 20,000 open files one process may hold. */
export const SOCKETS_PER_GENERATOR = 5000
