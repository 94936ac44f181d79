import { BadOptionError } from './errors.js'

// The `metrics` option (docs/metrics.md). The registry is described by the
// few methods the plugin uses, so that the plugin's types need no prom-client:
// an app without it still compiles.

/** What the plugin uses of a prom-client `Registry`; any prom-client 15 Registry fits. */
export interface MetricsRegistry {
  metrics (): Promise<string>
  registerMetric (metric: unknown): void
  getSingleMetric (name: string): unknown
  removeSingleMetric (name: string): void
}

export interface MetricsOptions {
  /**
   * The app's own prom-client Registry, to serve the plugin's metrics beside its own. Default: a
   * Registry of this plugin instance's own, read with `app.eventSocket.metrics()`. One registry holds
   * the metrics of one plugin instance: a second instance registered with it fails.
   */
  registry?: MetricsRegistry
}

export interface ResolvedMetricsOptions {
  /** Undefined: the plugin instance creates its own. */
  registry: MetricsRegistry | undefined
}

const registryMethods = ['metrics', 'registerMetric', 'getSingleMetric', 'removeSingleMetric'] as const

/** Undefined when metrics are off (the default). */
export function resolveMetrics (metrics: boolean | MetricsOptions | undefined): ResolvedMetricsOptions | undefined {
  if (metrics === undefined || metrics === false) return undefined
  if (metrics === true) return { registry: undefined }
  if (typeof metrics !== 'object' || metrics === null) throw new BadOptionError('metrics', 'must be true, false or { registry }')
  for (const key of Object.keys(metrics)) {
    if (key !== 'registry') throw new BadOptionError(`metrics.${key}`, 'is not a known option')
  }
  const { registry } = metrics
  if (registry !== undefined && registryMethods.some((method) => typeof (registry as unknown as Record<string, unknown> | null)?.[method] !== 'function')) {
    throw new BadOptionError('metrics.registry', 'must be a prom-client Registry')
  }
  return { registry }
}
