/** A promise with its settle functions; never reported as unhandled, since callers may not await it. */
export class Deferred {
  readonly promise: Promise<void>
  resolve!: () => void
  reject!: (error: Error) => void

  constructor () {
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve
      this.reject = reject
    })
    this.promise.catch(() => {})
  }
}
