// wse-rs-client: a client of WSE servers for browsers and Node 20+.
//
//   import { WseClient } from 'wse-rs-client'
//   const client = new WseClient({ url: 'ws://127.0.0.1:4200' })
//   await client.connect('secret', { user_id: 'ann' })
//   console.log(await client.call('add', { a: 1, b: 2 }))

export { WseClient, Status, Reason } from './client.js'
export { WseError, Code } from './errors.js'
export { Json, MessagePack } from './protocol.js'
export { hmacSolver } from './challenge.js'
export { Rooms, Presence, DirectMessages, PRESENCE_MESSAGE, DM_MESSAGE } from './extensions.js'
