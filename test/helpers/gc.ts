import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

// A full collection without --expose-gc on the command line, for the tests
// that compare memory: buffers released but not yet collected are held by
// nobody, and a loaded machine collects them later.
setFlagsFromString('--expose-gc')

export const gc = runInNewContext('gc') as () => void
