// Small promise tools of the RabbitMQ bus: waits settled from outside, and bounded.

/** A promise settled from outside, never reported as unhandled. */
export class Signal {
  readonly promise: Promise<void>
  resolve!: () => void
  reject!: (error: Error) => void

  constructor () {
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    this.promise.catch(() => {})
  }
}

export function deadline<T> (work: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((resolve, reject) => { timer = setTimeout(() => reject(error()), ms) })
  return Promise.race([work, expired]).finally(() => clearTimeout(timer))
}
