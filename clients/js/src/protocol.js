// The codecs: how a frame `[type, payload, stamp]` becomes one WebSocket message and back.
// A protocol object is { name, binary, encode(frame), decode(data) }; its name is the
// WebSocket subprotocol the client offers, and the server selects it or refuses.

import { decode as unpack, encode as pack } from '@msgpack/msgpack'

/** JSON text frames, subprotocol `wse-default-json`: what every WSE server speaks. */
export const Json = Object.freeze({
  name: 'wse-default-json',
  binary: false,
  encode (frame) {
    return JSON.stringify(frame)
  },
  decode (data) {
    if (typeof data !== 'string') throw new TypeError('a JSON frame must arrive as text')
    return JSON.parse(data)
  }
})

/** MessagePack binary frames, subprotocol `wse-msgpack` (a wse-rs extension). */
export const MessagePack = Object.freeze({
  name: 'wse-msgpack',
  binary: true,
  encode (frame) {
    // undefined has no MessagePack form; the protocol's absent element is nil.
    return pack(frame, { ignoreUndefined: true })
  },
  decode (data) {
    if (typeof data === 'string') throw new TypeError('a MessagePack frame must arrive as binary')
    return unpack(data instanceof ArrayBuffer ? new Uint8Array(data) : data)
  }
})

/**
 * Reads one decoded message as a frame: an array of at most three elements whose type is a
 * string. A shorter array has its missing elements null; a stamp counts only when it is a
 * non-empty string.
 *
 * @returns {{type: string, payload: unknown, stamp: string | null} | null} null when the
 *   message is not a frame.
 */
export function readFrame (message) {
  if (!Array.isArray(message) || message.length === 0 || message.length > 3) return null
  const [type, payload = null, stamp = null] = message
  if (typeof type !== 'string' || type === '') return null
  return {
    type,
    payload: payload ?? null,
    stamp: typeof stamp === 'string' && stamp !== '' ? stamp : null
  }
}
