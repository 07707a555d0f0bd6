// The presence list's version rule, fed by hand: a late change never overwrites a newer one.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Presence } from '../src/index.js'

/** Just enough of a client for Presence: its calls and the presence messages it hears. */
function fakeClient (snapshot) {
  const handlers = new Map()
  const ready = []
  return {
    on: (type, fn) => { handlers.set(type, fn); return () => handlers.delete(type) },
    onReady: (fn) => { ready.push(fn); return () => {} },
    call: async (name) => {
      assert.equal(name, 'presence.subscribe')
      // A change that overtook the snapshot's answer arrives first.
      handlers.get('presence')({ user: 'bob', online: true, devices: 2, alias: 'bob', version: 9 })
      return snapshot
    },
    hear: (entry) => handlers.get('presence')(entry),
    reconnect: () => ready.forEach((fn) => fn({}, { reconnected: true }))
  }
}

const entry = (user, version, devices = 1) => ({ user, online: devices > 0, devices, alias: user, version })

test('changes apply only when newer than what is held, from snapshot or message', async () => {
  const client = fakeClient([entry('ann', 3), entry('bob', 7, 1)])
  const presence = new Presence(client)
  const changes = []
  presence.onChange((_list, change) => changes.push(change))

  const list = await presence.subscribe()
  // bob's version 9 came before the snapshot's 7, and stays.
  assert.deepEqual(list, [entry('ann', 3), entry('bob', 9, 2)])

  client.hear(entry('ann', 2, 0)) // late: older than the snapshot
  client.hear(entry('bob', 9, 0)) // same version: already applied
  assert.deepEqual(presence.list(), [entry('ann', 3), entry('bob', 9, 2)])

  client.hear(entry('ann', 10, 0)) // ann leaves
  client.hear(entry('ann', 4, 1)) // and a late "online" must not bring her back
  assert.deepEqual(presence.list(), [entry('bob', 9, 2)])
  // The change that overtook the snapshot is part of it: listeners hear one new list, then
  // each later change.
  assert.deepEqual(changes.map((change) => change?.version ?? null), [null, 10])
})

test('nothing is applied before subscribing, and a reconnection starts from a new snapshot', async () => {
  const client = fakeClient([entry('carol', 1)])
  const presence = new Presence(client)
  client.hear(entry('dave', 5))
  assert.deepEqual(presence.list(), [])
  await presence.subscribe()
  client.hear(entry('carol', 50))
  // After a restart the server's versions start over: the new snapshot wins.
  client.reconnect()
  await new Promise((resolve) => setImmediate(resolve))
  assert.deepEqual(presence.list(), [entry('bob', 9, 2), entry('carol', 1)])
})
