// Open-loop runs (latency, slow consumer) publish at fractions of a peer's
// fan-out rate. The rate comes from scenario 1 when it ran in the same run;
// otherwise it is measured here, on the deployment at hand.
import { FANOUT_TOPIC } from '../lib/config.js'
import { throughput } from '../lib/measure.js'
import { fanoutKey, type Context } from '../lib/results.js'
import type { Deployment } from '../lib/deploy.js'

/** Payload of the open-loop runs, bytes. */
export const OPEN_LOOP_SIZE = 128

/** The peer's best fan-out events/s (frames/s over subscribers) at `subs` subscribers and OPEN_LOOP_SIZE bytes. */
export async function fanoutEventRate (context: Context, deployment: Deployment, subs: number): Promise<number> {
  const measured = context.args.bursts
    .map((burst) => context.fanout.get(fanoutKey(deployment.name, subs, burst, OPEN_LOOP_SIZE)))
    .filter((rate) => rate !== undefined)
  const best = measured.length > 0
    ? Math.max(...measured)
    : (await throughput(deployment, { burst: 5, size: OPEN_LOOP_SIZE, topic: FANOUT_TOPIC }, context.args)).framesPerSec
  return best / subs
}
