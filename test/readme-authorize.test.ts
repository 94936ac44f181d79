import t from 'tap'
import { readFileSync } from 'node:fs'
import { defaultAuthorize, type Authorize, type EventSocketUser } from '../lib/index.js'

// The README's quick start is what apps copy. Its `authorize` is taken from
// the README itself and run against the boundary cases docs/security.md
// warns about: a prefix without a word boundary, and a `sub` that is not a
// plain word (`*`, `#`, `2.x`) reaching into other users' topics.

function quickStartAuthorize (): Authorize {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const quickStart = readme.slice(readme.indexOf('## Quick start'))
  const code = /```ts\n([\s\S]*?)```/.exec(quickStart)?.[1]
  const source = code === undefined ? undefined : /^ {2}authorize: ([\s\S]*?)\n\}\)/m.exec(code)?.[1]
  if (source === undefined) throw new Error('no authorize option in the README quick start')
  // eslint-disable-next-line no-new-func -- the point is to run the README's own code
  return new Function('defaultAuthorize', `return (\n${source}\n)`)(defaultAuthorize) as Authorize
}

const request = {} as Parameters<Authorize>[2]
const user = (sub: string, role?: string): EventSocketUser => role === undefined ? { sub } : { sub, role }

t.test('the README quick-start authorize keeps users inside their own topics', async (t) => {
  const authorize = quickStartAuthorize()
  // A sub that is not one word (`*`, `#`, `2.x`) would make its prefix a wildcard or another user's.
  const cases: Array<{ who: EventSocketUser, allowed: string[], refused: string[] }> = [
    { who: user('1'), allowed: ['user.1', 'user.1.inbox', 'user.1.#', 'orders', 'orders.created'], refused: ['user.10.inbox', 'user.10', 'user.*.inbox', 'user.#', 'ordersx.created'] },
    { who: user('*'), allowed: [], refused: ['user.*.inbox', 'user.*'] },
    { who: user('#'), allowed: [], refused: ['user.#.inbox', 'user.#'] },
    { who: user('2.x'), allowed: [], refused: ['user.2.x.inbox'] },
    { who: user('1', 'admin'), allowed: ['user.2.inbox', '#'], refused: [] }
  ]
  for (const { who, allowed, refused } of cases) {
    for (const pattern of [...allowed, ...refused]) {
      const expected = allowed.includes(pattern)
      t.equal(await authorize(who, pattern, request), expected, `sub ${who.sub}${who.role === undefined ? '' : ` (${who.role})`} ${expected ? 'may' : 'may not'} subscribe to ${pattern}`)
    }
  }
})
