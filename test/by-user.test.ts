import t from 'tap'
import { ConnectionsByUser } from '../lib/by-user.js'

// Revocations find a user's connections here (lib/hub.ts); a user with one
// connection is held without a Set, a second connection makes one.

t.test('one connection, then two, then one again, then none', async (t) => {
  const byUser = new ConnectionsByUser<{ id: number }>()
  const [a, b] = [{ id: 1 }, { id: 2 }]
  byUser.add('u', a)
  byUser.add('u', a)
  t.same(byUser.of('u'), [a], 'added twice, held once')
  byUser.add('u', b)
  t.same(byUser.of('u'), [a, b])
  byUser.delete('u', a)
  t.same(byUser.of('u'), [b], 'the one left')
  byUser.add('u', a)
  t.same(byUser.of('u'), [b, a], 'a Set again with the second')
  byUser.delete('u', a)
  byUser.delete('u', b)
  t.same(byUser.of('u'), [], 'none left')
  byUser.delete('u', b)
  t.same(byUser.of('u'), [], 'deleting again is harmless')
})

t.test('another user\'s connection, or one never added, is left alone', async (t) => {
  const byUser = new ConnectionsByUser<{ id: number }>()
  const [a, b, c] = [{ id: 1 }, { id: 2 }, { id: 3 }]
  byUser.add('u', a)
  byUser.add('v', b)
  byUser.delete('u', b)
  byUser.delete('u', c)
  t.same(byUser.of('u'), [a])
  t.same(byUser.of('v'), [b])
  byUser.add('u', c)
  byUser.delete('u', b)
  t.same(byUser.of('u'), [a, c], 'a Set keeps its members when asked to delete a stranger')
})

t.test('of() is a copy: closing each connection as it is walked removes it and misses none', async (t) => {
  const byUser = new ConnectionsByUser<{ id: number }>()
  const all = [{ id: 1 }, { id: 2 }, { id: 3 }]
  for (const each of all) byUser.add('u', each)
  const walked = []
  for (const each of byUser.of('u')) {
    walked.push(each)
    byUser.delete('u', each)
  }
  t.same(walked, all)
  t.same(byUser.of('u'), [])
})
