import type { Test } from 'tap'

/**
 * Collects what reaches `uncaughtException` and `unhandledRejection` while the
 * test runs, so that a throw the code under test lets escape fails the test's
 * own assertion instead of ending the runner.
 */
export function watchProcess (t: Test): unknown[] {
  const failures: unknown[] = []
  const onFailure = (err: unknown): void => { failures.push(err) }
  process.on('uncaughtException', onFailure)
  process.on('unhandledRejection', onFailure)
  t.teardown(() => {
    process.off('uncaughtException', onFailure)
    process.off('unhandledRejection', onFailure)
  })
  return failures
}
