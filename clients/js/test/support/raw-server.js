// A WebSocket server of a few lines over node:http, for pinning the client's wire: it hands
// the test every message the client sends, as it was sent, and sends raw frames back. It
// speaks just enough of RFC 6455 for that: unfragmented text, binary and close frames.

import { createServer } from 'node:http'
import { createHash } from 'node:crypto'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

export class RawServer {
  #http
  #socket = null
  #inbox = []
  #waiting = []
  #buffer = Buffer.alloc(0)
  #closeSent = false
  /** Every connection so far, ended by stop(). */
  #sockets = new Set()

  /** Listens on 127.0.0.1 with a free port; selects `subprotocol` when the client offers it. */
  static async start (subprotocol = 'wse-default-json') {
    const server = new RawServer()
    server.offered = null
    server.#http = createServer()
    server.connections = 0
    server.#http.on('upgrade', (request, socket) => {
      server.connections += 1
      server.offered = request.headers['sec-websocket-protocol'] ?? null
      const accept = createHash('sha1').update(request.headers['sec-websocket-key'] + GUID).digest('base64')
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${subprotocol}\r\n\r\n`)
      server.#socket = socket
      server.#sockets.add(socket)
      socket.on('data', (chunk) => server.#read(chunk))
    })
    await new Promise((resolve) => server.#http.listen(0, '127.0.0.1', resolve))
    return server
  }

  get url () { return `ws://127.0.0.1:${this.#http.address().port}` }

  /** The next message the client sends: `{opcode, data}` (text as a string). */
  next () {
    if (this.#inbox.length > 0) return Promise.resolve(this.#inbox.shift())
    return new Promise((resolve) => this.#waiting.push(resolve))
  }

  /** Whether a message is waiting, after giving the client `ms` to send one. */
  async quietFor (ms) {
    await new Promise((resolve) => setTimeout(resolve, ms))
    return this.#inbox.length === 0
  }

  /** Sends a text message. */
  sendText (text) { this.#write(0x1, Buffer.from(text)) }
  /** Sends a binary message. */
  sendBinary (bytes) { this.#write(0x2, Buffer.from(bytes)) }
  /** Sends a close frame (the client answers it, and then the server ends the connection). */
  sendClose (code, reason) {
    const body = Buffer.alloc(2 + Buffer.byteLength(reason))
    body.writeUInt16BE(code, 0)
    body.write(reason, 2)
    this.#write(0x8, body)
    this.#closeSent = true
  }

  async stop () {
    for (const socket of this.#sockets) socket.destroy()
    await new Promise((resolve) => this.#http.close(resolve))
  }

  #write (opcode, body) {
    const head = body.length < 126
      ? Buffer.from([0x80 | opcode, body.length])
      : Buffer.from([0x80 | opcode, 126, body.length >> 8, body.length & 0xff])
    this.#socket.write(Buffer.concat([head, body]))
  }

  #read (chunk) {
    this.#buffer = Buffer.concat([this.#buffer, chunk])
    for (;;) {
      if (this.#buffer.length < 2) return
      const opcode = this.#buffer[0] & 0x0f
      let length = this.#buffer[1] & 0x7f
      let offset = 2
      if (length === 126) { length = this.#buffer.readUInt16BE(2); offset = 4 }
      if (length === 127) throw new Error('the raw server takes no message this long')
      // Frames from a client are always masked.
      if (this.#buffer.length < offset + 4 + length) return
      const mask = this.#buffer.subarray(offset, offset + 4)
      const body = Buffer.from(this.#buffer.subarray(offset + 4, offset + 4 + length))
      for (let i = 0; i < body.length; i++) body[i] ^= mask[i % 4]
      this.#buffer = this.#buffer.subarray(offset + 4 + length)
      const message = { opcode, data: opcode === 0x1 ? body.toString('utf8') : body }
      if (opcode === 0x8) {
        message.close = { code: body.readUInt16BE(0), reason: body.subarray(2).toString() }
        // The closing handshake: answer a close we did not start, then end the TCP
        // connection, which is the server's to end (RFC 6455 §7.1.1).
        if (!this.#closeSent) this.#write(0x8, body)
        this.#socket.end()
      }
      const waiter = this.#waiting.shift()
      if (waiter) waiter(message)
      else this.#inbox.push(message)
    }
  }
}
