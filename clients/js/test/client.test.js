// The client against the real demo server, over JSON and over MessagePack.

import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Code, Json, MessagePack, Status, WseClient, WseError, hmacSolver } from '../src/index.js'
import { Demo, eventually, next } from './support/demo.js'

let demo
before(async () => { demo = await Demo.start() })
after(async () => { await demo?.stop() })

let users = 0
/** A user id no other test uses. */
const fresh = (name) => `${name}-${++users}-${Date.now()}`

for (const protocol of [Json, MessagePack]) {
  describe(`over ${protocol.name}`, () => {
    const open = []
    const client = (options = {}) => {
      const made = new WseClient({ url: demo.url, protocol, reconnect: false, ...options })
      open.push(made)
      return made
    }
    const signedIn = async (user, options) => {
      const made = client(options)
      await made.connect('secret', { user_id: user })
      return made
    }
    after(() => { for (const made of open) made.close() })

    test('connect resolves with the welcome and the status goes connecting, ready', async () => {
      const ann = client()
      const seen = []
      ann.onStatus((status) => seen.push(status))
      const user = fresh('ann')
      const welcome = await ann.connect('secret', { user_id: user, device: 'laptop' })
      assert.deepEqual(welcome, { cid: user, meta: { user_id: user, device: 'laptop' } })
      assert.deepEqual(seen, [Status.CONNECTING, Status.READY])
      assert.equal(ann.status, Status.READY)
      await assert.rejects(ann.connect('secret', { user_id: user }), { code: Code.ALREADY_CONNECTED })
    })

    test('a refused identity rejects connect with wse.not-authorized, offline', async () => {
      const stranger = client({ reconnect: true })
      await assert.rejects(stranger.connect('wrong', { user_id: 'x' }), { code: Code.NOT_AUTHORIZED })
      assert.equal(stranger.status, Status.OFFLINE)
    })

    test('calls resolve with results and reject with the server code and details', async () => {
      const ann = await signedIn(fresh('ann'))
      assert.equal(await ann.call('add', { a: 2, b: 40 }), 42)
      const results = await Promise.all([1, 2, 3].map((n) => ann.call('delay', { ms: 30 * (4 - n), value: n })))
      assert.deepEqual(results, [1, 2, 3])
      await assert.rejects(ann.call('fail_custom', {}), (error) => {
        assert.ok(error instanceof WseError)
        assert.equal(error.code, 'app.custom-failure')
        assert.deepEqual(error.details, { reason: 'custom', rpc: 'fail_custom' })
        return true
      })
      await assert.rejects(ann.call('no-such-procedure', {}), { code: Code.RP_NOT_REGISTERED })
    })

    test('a call times out, and an aborted call rejects with the signal reason', async () => {
      const ann = await signedIn(fresh('ann'))
      await assert.rejects(ann.call('delay', { ms: 2000, value: 1 }, { timeout: 50 }), { code: Code.RP_TIMEOUT })
      const controller = new AbortController()
      const pending = ann.call('delay', { ms: 2000, value: 1 }, { signal: controller.signal })
      controller.abort(new Error('user went away'))
      await assert.rejects(pending, { message: 'user went away' })
      // The connection is fine afterwards, and the late answers were dropped quietly.
      assert.equal(await ann.call('add', { a: 1, b: 1 }), 2)
    })

    test('calls and sends before the welcome fail with wse.client.not-ready', async () => {
      const idle = client()
      await assert.rejects(idle.call('add', { a: 1, b: 1 }), { code: Code.NOT_READY })
      assert.throws(() => idle.send('echo', 1), { code: Code.NOT_READY })
      assert.throws(() => idle.send('~wse:hi', 1), TypeError)
    })

    test('messages both ways, to one device and to every device of a user', async () => {
      const user = fresh('ann')
      const phone = await signedIn(user)
      const laptop = await signedIn(user)
      const echoed = next(phone, 'echo')
      phone.send('echo', { text: 'hello' })
      assert.deepEqual(await echoed, { text: 'hello' })

      const onPhone = next(phone, 'both')
      const onLaptop = next(laptop, 'both')
      const only = next(phone, 'only')
      phone.send('hey', 7)
      assert.deepEqual(await Promise.all([onPhone, onLaptop, only]), [7, 7, 7])

      const ignored = new Promise((resolve) => laptop.onIgnored((type, payload) => resolve([type, payload])))
      await phone.call('send_to_user', { user, type: 'unheard', payload: [1, 2] })
      assert.deepEqual(await ignored, ['unheard', [1, 2]])
    })

    test('the server calls procedures the client registered', async () => {
      const ann = await signedIn(fresh('ann'))
      await assert.rejects(ann.call('ask_me', {}), { code: Code.RP_NOT_REGISTERED })
      ann.register('client_sum', ({ a, b }) => a + b)
      assert.throws(() => ann.register('client_sum', () => 0), { code: Code.RP_ALREADY_REGISTERED })
      assert.equal(await ann.call('ask_me', {}), 42)

      const bobId = fresh('bob')
      const bob = await signedIn(bobId)
      const asked = []
      bob.register('client_sum', async ({ a, b }) => { asked.push([a, b]); throw new WseError('app.no-math', { mood: 'tired' }) })
      await assert.rejects(ann.call('ask_user', { user: bobId, a: 1, b: 2 }), (error) => {
        assert.equal(error.code, 'app.no-math')
        assert.deepEqual(error.details, { mood: 'tired', rpc: 'client_sum' })
        return true
      })
      assert.deepEqual(asked, [[1, 2]])
      bob.unregister('client_sum')
      bob.register('client_sum', () => { throw new Error('a bug with a secret inside') })
      await assert.rejects(ann.call('ask_user', { user: bobId, a: 1, b: 2 }), (error) => {
        assert.equal(error.code, Code.RP_FAILED)
        assert.ok(!JSON.stringify(error.details ?? null).includes('secret'))
        return true
      })
    })

    test('rooms: join, mine, leave, a room chat, and a forbidden room', async () => {
      const ann = await signedIn(fresh('ann'))
      const bob = await signedIn(fresh('bob'))
      const room = `public-${fresh('room')}`
      assert.equal(await ann.rooms.join(room), true)
      assert.equal(await ann.rooms.join(room), false)
      await bob.rooms.join(room)
      assert.deepEqual(await ann.rooms.mine(), [room])
      const heard = next(bob, 'chat')
      assert.equal(await ann.call('room_send', { room, type: 'chat', payload: 'hi room', except: 'none' }), true)
      assert.equal(await heard, 'hi room')
      assert.equal(await ann.rooms.leave(room), true)
      assert.deepEqual(await ann.rooms.mine(), [])
      await assert.rejects(ann.rooms.join('private-club'), { code: 'wse.server.room.forbidden' })
    })

    test('presence: a subscription starts from a snapshot and follows changes', async () => {
      const me = fresh('watcher')
      const watcher = await signedIn(me)
      const carol = fresh('carol')
      const changes = []
      watcher.presence.onChange((_list, change) => changes.push(change))
      const snapshot = await watcher.presence.subscribe()
      assert.ok(snapshot.some((entry) => entry.user === me && entry.online && entry.devices === 1))
      const phone = await signedIn(carol)
      await eventually('carol online', () => watcher.presence.list().some((e) => e.user === carol && e.devices === 1))
      const laptop = await signedIn(carol)
      await eventually('carol on two devices', () => watcher.presence.list().some((e) => e.user === carol && e.devices === 2))
      await phone.call('set_profile', { alias: 'Carol' })
      await eventually('the alias', () => watcher.presence.list().some((e) => e.user === carol && e.alias === 'Carol'))
      phone.close()
      laptop.close()
      await eventually('carol offline', () => !watcher.presence.list().some((e) => e.user === carol))
      const versions = changes.filter((c) => c?.user === carol).map((c) => c.version)
      assert.deepEqual(versions, [...versions].sort((a, b) => a - b))
      assert.ok(Array.isArray(await watcher.presence.online()))
    })

    test('private messages reach every device of the receiver, and the filter refuses', async () => {
      const ann = await signedIn(fresh('ann'))
      const bobId = fresh('bob')
      const bobPhone = await signedIn(bobId)
      const bobLaptop = await signedIn(bobId)
      const got = [bobPhone, bobLaptop].map((device) => new Promise((resolve) => device.dm.onMessage(resolve)))
      assert.equal(await ann.dm.send(bobId, 'psst'), true)
      const from = (await ann.call('whoami', {})).user
      assert.deepEqual(await Promise.all(got), [{ from, payload: 'psst' }, { from, payload: 'psst' }])
      assert.equal(await ann.dm.send(fresh('nobody'), 'hello?'), false)
      await assert.rejects(ann.dm.send(bobId, 'spam'), { code: 'app.dm-refused' })
    })

    test('the HMAC challenge with the built-in solver, and a wrong secret refused', async () => {
      const good = client({ url: demo.hmacUrl })
      good.challenge(hmacSolver('s3cret'))
      const welcome = await good.connect('secret', { user_id: fresh('ann') })
      assert.equal(welcome.cra, true)
      const bad = client({ url: demo.hmacUrl })
      bad.challenge(hmacSolver('guess'))
      await assert.rejects(bad.connect('secret', { user_id: fresh('ann') }), { code: Code.NOT_AUTHORIZED })
      const none = client({ url: demo.hmacUrl })
      await assert.rejects(none.connect('secret', { user_id: fresh('ann') }), { code: Code.INVALID_CRA_HANDLER })
    })

    test('logout closes with wse.logout and the client stays offline', async () => {
      const ann = await signedIn(fresh('ann'), { reconnect: true })
      const closed = new Promise((resolve) => ann.onClose((code, reason) => resolve([code, reason])))
      assert.equal(await ann.call('logout', { all: false }), true)
      assert.deepEqual(await closed, [1000, 'wse.logout'])
      await new Promise((resolve) => setTimeout(resolve, 300))
      assert.equal(ann.status, Status.OFFLINE)
    })

    test('a third device pushes out the oldest, which does not come back', async () => {
      const user = fresh('ann')
      const first = await signedIn(user, { reconnect: true })
      const closed = new Promise((resolve) => first.onClose((code, reason) => resolve([code, reason])))
      await signedIn(user)
      await signedIn(user)
      assert.deepEqual(await closed, [1000, 'wse.clients-concurrency'])
      assert.equal(first.status, Status.OFFLINE)
    })

    test('jump leaves with 4000 and connects to the other server', async () => {
      const ann = await signedIn(fresh('ann'))
      ann.challenge(hmacSolver('s3cret'))
      const closes = []
      ann.onClose((code, reason) => closes.push([code, reason]))
      const welcome = await ann.jump(demo.hmacUrl)
      assert.equal(welcome.cra, true)
      assert.equal(ann.url, demo.hmacUrl)
      assert.deepEqual(closes, [[4000, 'jump']])
      assert.equal(await ann.call('add', { a: 1, b: 2 }), 3)
    })
  })
}

describe('reconnection', () => {
  test('after a server restart: back to ready, rooms rejoined, presence renewed', async () => {
    const own = await Demo.start()
    const ann = new WseClient({ url: own.url, reconnect: { base: 100, max: 400 } })
    const bob = new WseClient({ url: own.url, reconnect: { base: 100, max: 400 } })
    try {
      const seen = []
      ann.onStatus((status) => seen.push(status))
      await ann.connect('secret', { user_id: 'ann' })
      await bob.connect('secret', { user_id: 'bob' })
      await ann.rooms.join('public-lobby')
      await ann.presence.subscribe()
      const cutShort = assert.rejects(ann.call('delay', { ms: 10_000, value: 1 }), { code: Code.RP_DISCONNECT })

      await own.restart()
      await cutShort
      await eventually('ann back', () => ann.status === Status.READY && bob.status === Status.READY)
      assert.deepEqual(seen.slice(0, 4), [Status.CONNECTING, Status.READY, Status.RECONNECTING, Status.READY])
      await eventually('the room rejoined', async () => (await ann.rooms.mine()).includes('public-lobby'))
      await eventually('presence renewed', () => ann.presence.list().some((e) => e.user === 'bob'))
      const heard = next(ann, 'chat')
      await bob.call('room_send', { room: 'public-lobby', type: 'chat', payload: 'welcome back', except: 'none' })
      assert.equal(await heard, 'welcome back')
    } finally {
      ann.close()
      bob.close()
      await own.stop()
    }
  })

  test('the first connect to a server that is not there rejects at once', async () => {
    const nowhere = new WseClient({ url: 'ws://127.0.0.1:9', reconnect: true })
    await assert.rejects(nowhere.connect('secret', { user_id: 'ann' }), { code: Code.WS_ERROR })
    assert.equal(nowhere.status, Status.OFFLINE)
  })
})
