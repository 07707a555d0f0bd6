// Compiled by dist.test.js (never run): the types let a typical program through, strictly.

import { Code, MessagePack, type PresenceEntry, WseClient, WseError, hmacSolver } from 'wse-rs-client'

interface Welcome { cid: string }

export async function typical (): Promise<number> {
  const client = new WseClient({ url: 'ws://127.0.0.1:4200', protocol: MessagePack, reconnect: { base: 500 } })
  client.challenge(hmacSolver('s3cret'))
  const welcome = await client.connect<Welcome>('secret', { user_id: 'ann' })
  const cid: string = welcome.cid
  client.onStatus((status) => { if (status === 'reconnecting') console.log(cid) })
  client.on<{ from: string, text: string }>('chat', ({ from, text }) => console.log(from, text))
  client.register<{ a: number, b: number }, number>('client_sum', ({ a, b }) => a + b)
  await client.rooms.join('public-lobby')
  const online: PresenceEntry[] = await client.presence.subscribe()
  client.presence.onChange((list, change) => console.log(list.length, change?.version))
  client.dm.onMessage<string>(({ from, payload }) => console.log(from, payload.length))
  const delivered: boolean = await client.dm.send('bob', 'hi')
  try {
    return await client.call<number>('add', { a: online.length, b: Number(delivered) }, { timeout: 1000 })
  } catch (error) {
    if (error instanceof WseError && error.code === Code.RP_TIMEOUT) return -1
    throw error
  }
}
