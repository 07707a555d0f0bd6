// The demo page: one device of one user. Everything it does goes through the client module
// the server ships at /wse.js (clients/js/dist/wse.js), as a page of your own would.

import { Json, MessagePack, WseClient, hmacSolver } from '/wse.js'

const $ = (id) => document.getElementById(id)
const LOG_LINES = 200

/** The endpoint beside this page, over wss:// when the page came over https://. */
const endpoint = new URL('/ws', location.href)
endpoint.protocol = endpoint.protocol === 'https:' ? 'wss:' : 'ws:'

let client = null
let user = null
let room = null

function log (list, text, kind = '') {
  const item = document.createElement('li')
  item.textContent = text
  item.className = kind
  list.append(item)
  while (list.children.length > LOG_LINES) list.firstElementChild.remove()
  list.scrollTop = list.scrollHeight
}

/** A payload as a line of the page: a string as it is, anything else as JSON. */
function shown (payload) {
  return typeof payload === 'string' ? payload : JSON.stringify(payload)
}

function describe (error) {
  const details = error.details === undefined ? '' : ` ${JSON.stringify(error.details)}`
  return `${error.code ?? error.name}${details}`
}

function showStatus (status) {
  $('status').textContent = status
  $('status').dataset.status = status
}

function showOnline (list) {
  $('online').replaceChildren(...list.map((entry) => {
    const item = document.createElement('li')
    item.dataset.user = entry.user
    const name = document.createElement('strong')
    name.textContent = entry.alias
    const devices = document.createElement('span')
    devices.className = 'devices'
    devices.textContent = entry.devices === 1 ? '1 device' : `${entry.devices} devices`
    item.append(name, ' ', devices)
    if (entry.user !== user) {
      item.title = 'private message'
      item.addEventListener('click', () => { $('dm-to').value = entry.user; $('dm-text').focus() })
    }
    return item
  }))
}

function showSignIn (message = '') {
  $('app').hidden = true
  $('sign-in').hidden = false
  $('sign-in-error').textContent = message
}

/** The app as a new sign-in finds it: nothing of the previous user's left. */
function resetApp () {
  for (const id of ['chat', 'dms', 'inbox', 'online']) $(id).replaceChildren()
  for (const id of ['room-name', 'dm-result', 'sum', 'error']) $(id).textContent = ''
  for (const input of $('say').elements) input.disabled = true
}

async function signIn (name, password, msgpack) {
  client?.close()
  resetApp()
  user = name
  room = null
  const protocol = msgpack ? MessagePack : Json
  const own = client = new WseClient({ url: endpoint, protocol })
  own.onStatus(showStatus)
  own.onClose((code, reason) => {
    // Offline means "stay away": refused (also while reconnecting), logged out, or pushed
    // out by a newer device. A client replaced by a new sign-in says nothing.
    if (own === client && own.status === 'offline') showSignIn(reason ? `closed: ${reason}` : 'closed')
  })
  own.on('chat', (line) => log($('chat'), `${shown(line?.from)}: ${shown(line?.text)}`))
  own.dm.onMessage(({ from, payload }) => log($('dms'), `from ${from}: ${shown(payload)}`, 'in'))
  own.onIgnored((type, payload) => log($('inbox'), `${type} ${JSON.stringify(payload)}`))
  own.register('client_sum', (args) => {
    log($('inbox'), `the server called client_sum(${args?.a}, ${args?.b})`)
    return args?.a + args?.b
  })
  own.presence.onChange(showOnline)
  // Used only where the server challenges (the demo's HMAC port); WebCrypto is there only
  // in a secure context (https, or localhost).
  if (globalThis.crypto?.subtle) own.challenge(hmacSolver($('secret').value))

  const button = $('sign-in').querySelector('button')
  button.disabled = true
  try {
    await own.connect(password, { user_id: name })
  } catch (error) {
    if (own === client) showSignIn(`refused: ${describe(error)}`)
    return
  } finally {
    button.disabled = false
  }
  $('me').textContent = name
  $('codec').textContent = protocol.name
  const second = new URL(location.href)
  second.search = new URLSearchParams({ user: name, ...(msgpack ? { msgpack: '1' } : {}) })
  $('second-device').href = second.href
  $('sign-in').hidden = true
  $('app').hidden = false
  history.replaceState(null, '', second.href)
  await own.presence.subscribe().catch((error) => log($('inbox'), `no presence: ${describe(error)}`))
}

$('sign-in').addEventListener('submit', (event) => {
  event.preventDefault()
  signIn($('user').value.trim(), $('password').value, $('msgpack').checked)
})

$('sign-out').addEventListener('click', async () => {
  history.replaceState(null, '', location.pathname)
  await client.call('logout', { all: false }).catch(() => client.close())
})

$('join').addEventListener('submit', async (event) => {
  event.preventDefault()
  const wanted = $('room').value.trim()
  try {
    await client.rooms.join(wanted)
    // Into the new room first, so that a refused one leaves us where we were.
    if (room !== null && room !== wanted) await client.rooms.leave(room)
  } catch (error) {
    log($('chat'), `cannot join ${wanted}: ${describe(error)}`, 'error')
    return
  }
  room = wanted
  $('room-name').textContent = room
  for (const input of $('say').elements) input.disabled = false
  log($('chat'), `you joined ${room}`, 'note')
})

$('say').addEventListener('submit', async (event) => {
  event.preventDefault()
  const text = $('line').value
  $('line').value = ''
  await client.call('room_send', { room, type: 'chat', payload: { from: user, text }, except: 'none' })
    .catch((error) => log($('chat'), `not sent: ${describe(error)}`, 'error'))
})

$('dm').addEventListener('submit', async (event) => {
  event.preventDefault()
  const to = $('dm-to').value.trim()
  const text = $('dm-text').value
  try {
    const delivered = await client.dm.send(to, text)
    $('dm-result').textContent = delivered ? `delivered to ${to}` : `${to} is offline`
    if (delivered) log($('dms'), `to ${to}: ${text}`, 'out')
    $('dm-text').value = ''
  } catch (error) {
    $('dm-result').textContent = `refused: ${describe(error)}`
  }
})

$('add').addEventListener('submit', async (event) => {
  event.preventDefault()
  try {
    $('sum').textContent = `= ${await client.call('add', { a: Number($('a').value), b: Number($('b').value) })}`
  } catch (error) {
    $('sum').textContent = describe(error)
  }
})

$('fail').addEventListener('click', async () => {
  try {
    await client.call('fail_custom', {})
    $('error').textContent = 'no error?'
  } catch (error) {
    $('error').textContent = describe(error)
  }
})

const asked = new URLSearchParams(location.search)
if (asked.get('user')) {
  $('user').value = asked.get('user')
  $('msgpack').checked = asked.get('msgpack') === '1'
  signIn(asked.get('user'), $('password').value, asked.get('msgpack') === '1')
}
