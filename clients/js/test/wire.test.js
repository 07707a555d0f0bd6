// The client's wire, pinned with raw frames against PROTOCOL.md: what it sends byte for byte,
// and how it reads what a server may send (shorter arrays, stamps, unknown responses).

import { afterEach, test } from 'node:test'
import assert from 'node:assert/strict'
import { decode } from '@msgpack/msgpack'
import { Code, MessagePack, WseClient, hmacSolver } from '../src/index.js'
import { RawServer } from './support/raw-server.js'

let server
afterEach(async () => { await server?.stop() })

/** A client welcomed by the raw server, with the hi it sent. */
async function welcomed (options = {}) {
  server = await RawServer.start()
  const client = new WseClient({ url: server.url, reconnect: false, ...options })
  const connecting = client.connect('token', { device: 'phone' })
  const hi = await server.next()
  server.sendText('["~wse:welcome",{"cid":"ann"}]')
  assert.deepEqual(await connecting, { cid: 'ann' })
  return { client, hi }
}

test('hi is the first frame, exactly as the JS library writes it, on wse-default-json', async () => {
  const { client, hi } = await welcomed()
  assert.equal(server.offered, 'wse-default-json')
  assert.equal(hi.opcode, 0x1)
  assert.equal(hi.data, '["~wse:hi",{"identity":"token","meta":{"device":"phone"}},null]')
  client.close()
})

test('a call carries ten alphanumerics as its stamp and settles on the matching response only', async () => {
  const { client } = await welcomed()
  const calling = client.call('sum', { a: 1 })
  const frame = await server.next()
  const [type, payload, stamp] = JSON.parse(frame.data)
  assert.equal(frame.data, `["sum",{"a":1},"${stamp}"]`)
  assert.deepEqual([type, payload], ['sum', { a: 1 }])
  assert.match(stamp, /^[A-Za-z0-9]{10}$/)
  // A response to no pending call is dropped, never answered.
  server.sendText('["~wse:response",99,"not-a-call"]')
  assert.ok(await server.quietFor(50))
  server.sendText(`["~wse:response",3,"${stamp}"]`)
  assert.equal(await calling, 3)

  const failing = client.call('sum', null)
  const [, nullPayload, second] = JSON.parse((await server.next()).data)
  assert.equal(nullPayload, null)
  server.sendText(`["~wse:response-err",{"code":"app.nope","details":{"x":1}},"${second}"]`)
  await assert.rejects(failing, { code: 'app.nope', details: { x: 1 } })
  client.close()
})

test("the server's calls are answered under their stamp; unknown procedures with not-registered", async () => {
  const { client } = await welcomed()
  client.register('double', (n) => n * 2)
  client.register('broken', () => { throw new Error('internal detail') })
  server.sendText('["double",21,"s1"]')
  assert.equal((await server.next()).data, '["~wse:response",42,"s1"]')
  server.sendText('["nope",null,"s2"]')
  assert.equal((await server.next()).data, '["~wse:response-err",{"code":"wse.server.rp.not-registered"},"s2"]')
  server.sendText('["broken",null,"s3"]')
  assert.equal((await server.next()).data, '["~wse:response-err",{"code":"wse.server.rp.failed"},"s3"]')
  client.close()
})

/**
 * Waits until the client has handled every frame sent before: it handles frames in order, so
 * its answer to a call sent after them comes after them.
 */
async function handled (client) {
  if (!handled.registered.has(client)) {
    client.register('sync', () => 'synced')
    handled.registered.add(client)
  }
  server.sendText('["sync",null,"sync-stamp"]')
  assert.equal((await server.next()).data, '["~wse:response","synced","sync-stamp"]')
}
handled.registered = new WeakSet()

test('messages: a shorter array and an empty stamp are one-way; send writes nulls', async () => {
  const { client } = await welcomed()
  const got = []
  client.on('tick', (payload) => got.push(payload))
  server.sendText('["tick",7]')
  server.sendText('["tick"]')
  server.sendText('["tick",8,""]')
  await handled(client)
  assert.deepEqual(got, [7, null, 8])
  client.send('ping')
  assert.equal((await server.next()).data, '["ping",null,null]')
  client.close()
})

test('a frame that is not a frame is reported, and the connection goes on', async () => {
  const { client } = await welcomed()
  const errors = []
  client.onError((error) => errors.push(error.code))
  server.sendText('{"not":"an array"}')
  server.sendText('not json')
  server.sendText('[42, null, null]')
  await handled(client)
  assert.deepEqual(errors, [Code.PROTOCOL_VIOLATION, Code.PROTOCOL_VIOLATION, Code.PROTOCOL_VIOLATION])
  client.close()
})

test('what the codec cannot encode fails that call or that answer alone', async () => {
  const { client } = await welcomed()
  await assert.rejects(client.call('sum', { big: 10n }), TypeError)
  client.register('big', () => 10n)
  server.sendText('["big",null,"b1"]')
  assert.equal((await server.next()).data, '["~wse:response-err",{"code":"wse.server.rp.failed"},"b1"]')
  await assert.rejects(client.call('', 1), TypeError)
  await assert.rejects(client.call('~wse:hi', 1), TypeError)
  assert.throws(() => client.close('x'.repeat(124)), TypeError)
  // Still connected, nothing else was sent.
  assert.ok(await server.quietFor(30))
  await handled(client)
  client.close()
})

test('close sends 1000 wse.by-client; a refusal rejects connect with wse.not-authorized', async () => {
  const { client } = await welcomed()
  client.close()
  assert.deepEqual((await server.next()).close, { code: 1000, reason: 'wse.by-client' })
  await server.stop()

  server = await RawServer.start()
  const refused = new WseClient({ url: server.url })
  const connecting = refused.connect('bad', {})
  await server.next()
  server.sendClose(1000, 'wse.not-authorized')
  await assert.rejects(connecting, { code: Code.NOT_AUTHORIZED })
})

test('the challenge: the solver gets the quest and its answer goes back as ~wse:challenge', async () => {
  server = await RawServer.start()
  const client = new WseClient({ url: server.url, reconnect: false })
  client.challenge((quest) => `solved:${quest.nonce}`)
  const connecting = client.connect('token', {})
  await server.next()
  server.sendText('["~wse:challenge",{"timestamp":1,"nonce":"n1"},null]')
  assert.equal((await server.next()).data, '["~wse:challenge","solved:n1",null]')
  server.sendText('["~wse:welcome",null,null]')
  assert.equal(await connecting, null)
  client.close()
})

test('MessagePack: offered as wse-msgpack, binary frames of the same arrays', async () => {
  server = await RawServer.start('wse-msgpack')
  const client = new WseClient({ url: server.url, protocol: MessagePack, reconnect: false })
  const connecting = client.connect('token', { n: 1 })
  const hi = await server.next()
  assert.equal(server.offered, 'wse-msgpack')
  assert.equal(hi.opcode, 0x2)
  assert.deepEqual(decode(hi.data), ['~wse:hi', { identity: 'token', meta: { n: 1 } }, null])
  server.sendBinary(MessagePack.encode(['~wse:welcome', { cid: 'ann' }, null]))
  assert.deepEqual(await connecting, { cid: 'ann' })
  client.send('bin', new Uint8Array([1, 2]))
  const sent = decode((await server.next()).data)
  assert.equal(sent.length, 3)
  assert.deepEqual([sent[0], Array.from(sent[1]), sent[2]], ['bin', [1, 2], null])
  assert.ok(sent[1] instanceof Uint8Array, 'bytes travel as MessagePack bin')
  client.close()
})

/** A client with fast retries, welcomed by the raw server. */
async function retrying () {
  return welcomed({ reconnect: { base: 20, max: 40 } })
}

/** Answers the next hi with a welcome. */
async function welcomeAgain () {
  const hi = await server.next()
  assert.match(hi.data, /^\["~wse:hi",/)
  server.sendText('["~wse:welcome",{"cid":"ann"},null]')
}

test('a refusal while reconnecting ends the retries, offline before the close is told', async () => {
  const { client } = await retrying()
  const told = []
  client.onStatus((status) => told.push(`status ${status}`))
  client.onClose((code, reason) => told.push(`close ${code} ${reason} while ${client.status}`))
  server.sendClose(1012, 'restart')
  await server.next() // the client's answer to the close
  await server.next() // the next hi
  server.sendClose(1000, 'wse.not-authorized')
  await server.next()
  assert.ok(await server.quietFor(200), 'no retry after a refusal')
  assert.equal(server.connections, 2)
  assert.deepEqual(told, [
    'status reconnecting', 'close 1012 restart while reconnecting',
    'status offline', 'close 1000 wse.not-authorized while offline'
  ])
})

test('close() while waiting to reconnect cancels the retry; 4000 from a server retries at once', async () => {
  const { client } = await retrying()
  server.sendClose(4000, 'jump')
  await server.next() // the client's answer to the close
  await welcomeAgain()
  await new Promise((resolve) => client.onReady(resolve))
  // close() from a status listener, the moment the client starts waiting to retry.
  const closed = new Promise((resolve) => client.onStatus((status) => {
    if (status === 'reconnecting') {
      client.close()
      resolve(client.status)
    }
  }))
  server.sendClose(1012, 'restart')
  await server.next()
  assert.equal(await closed, 'offline')
  assert.ok(await server.quietFor(200), 'no retry after close()')
  assert.equal(server.connections, 2)
})

test('a listener that connects during a close finds the retry already scheduled', async () => {
  const { client } = await retrying()
  const attempts = []
  const off = client.onClose(() => {
    off()
    client.connect('token', {}).catch((error) => attempts.push(error.code))
  })
  server.sendClose(1012, 'restart')
  await server.next()
  await welcomeAgain()
  await new Promise((resolve) => client.onReady(resolve))
  assert.deepEqual(attempts, [Code.ALREADY_CONNECTED])
  assert.equal(server.connections, 2)
  client.close()
})

test('rooms and presence survive a drop in the middle of their renewal', async () => {
  const { client } = await retrying()
  const joining = client.rooms.join('public-a')
  const [, , joinStamp] = JSON.parse((await server.next()).data)
  server.sendText(`["~wse:response",true,"${joinStamp}"]`)
  assert.equal(await joining, true)
  const subscribing = client.presence.subscribe()
  const [, , subscribeStamp] = JSON.parse((await server.next()).data)
  server.sendText(`["~wse:response",[{"user":"ann","online":true,"devices":1,"alias":"ann","version":1}],"${subscribeStamp}"]`)
  await subscribing

  for (let drop = 0; drop < 2; drop++) {
    server.sendClose(1012, 'restart')
    await server.next()
    await welcomeAgain()
    const renewals = [JSON.parse((await server.next()).data), JSON.parse((await server.next()).data)]
    assert.deepEqual(renewals.map(([type, payload]) => [type, payload]).sort(),
      [['presence.subscribe', {}], ['rooms.join', { room: 'public-a' }]])
    // The first time the connection drops again before answering: both are renewed anyway.
    if (drop === 1) {
      for (const [type, , stamp] of renewals) {
        const result = type === 'rooms.join' ? 'true' : '[{"user":"bob","online":true,"devices":2,"alias":"bob","version":1}]'
        server.sendText(`["~wse:response",${result},"${stamp}"]`)
      }
    }
  }
  await handled(client)
  assert.deepEqual(client.presence.list().map((entry) => entry.user), ['bob'])
  client.close()
})

test('jump closes with 4000 jump and says hi to the next server', async () => {
  const { client } = await welcomed()
  const first = server
  server = await RawServer.start()
  const jumping = client.jump(server.url)
  assert.deepEqual((await first.next()).close, { code: 4000, reason: 'jump' })
  await first.stop()
  assert.equal((await server.next()).data, '["~wse:hi",{"identity":"token","meta":{"device":"phone"}},null]')
  server.sendText('["~wse:welcome",{"cid":"ann"},null]')
  assert.deepEqual(await jumping, { cid: 'ann' })
  client.close()
})

test('a solver that fails (WebCrypto refusing an empty secret) ends the connect with invalid-cra-handler', async () => {
  server = await RawServer.start()
  const client = new WseClient({ url: server.url, reconnect: false })
  client.challenge(hmacSolver(''))
  const connecting = client.connect('token', {})
  await server.next()
  server.sendText('["~wse:challenge",{"timestamp":1732240000000,"nonce":"9f2c"},null]')
  await assert.rejects(connecting, { code: Code.INVALID_CRA_HANDLER })
  assert.deepEqual((await server.next()).close, { code: 1000, reason: Code.INVALID_CRA_HANDLER })
})

test('the HMAC solver answers the quest as PROTOCOL.md computes it', async () => {
  const { createHmac } = await import('node:crypto')
  const quest = { timestamp: 1732240000000, nonce: '9f2c0a1b2c3d4e5f60718293a4b5c6d7' }
  const expected = createHmac('sha256', 's3cret').update(`${quest.timestamp}${quest.nonce}`).digest('hex')
  assert.equal(await hmacSolver('s3cret')(quest), expected)
  await assert.rejects(hmacSolver('s3cret')({ nonce: 'x' }), { code: Code.INVALID_CRA_HANDLER })
})
