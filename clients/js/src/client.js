// The connection: the handshake, calls both ways, messages, status, reconnection and jumps.
// One WebSocket at a time; everything a socket owns (its pending calls, its handlers) ends
// with it, so a late event of an old socket never touches the new one.

import { Code, WseError } from './errors.js'
import { Json, readFrame } from './protocol.js'
import { DirectMessages, Presence, Rooms } from './extensions.js'

const HI = '~wse:hi'
const CHALLENGE = '~wse:challenge'
const WELCOME = '~wse:welcome'
const RESPONSE = '~wse:response'
const RESPONSE_ERR = '~wse:response-err'
const RESERVED = '~wse:'

/** Where a client is in its life. */
export const Status = Object.freeze({
  /** Made, never connected. */
  IDLE: 'idle',
  /** Opening the socket and authenticating. */
  CONNECTING: 'connecting',
  /** Welcomed: calls and messages flow. */
  READY: 'ready',
  /** Lost the connection and waiting to try again. */
  RECONNECTING: 'reconnecting',
  /** Closed, and staying closed until `connect` is called again. */
  OFFLINE: 'offline'
})

/** The close reasons of the protocol and this server. */
export const Reason = Object.freeze({
  NOT_AUTHORIZED: 'wse.not-authorized',
  PROTOCOL_ERROR: 'wse.protocol-error',
  CLIENTS_CONCURRENCY: 'wse.clients-concurrency',
  BY_CLIENT: 'wse.by-client',
  BY_SERVER: 'wse.by-server',
  LOGOUT: 'wse.logout',
  JUMP: 'jump'
})

/** Close codes after which a client with reconnection on tries again (PROTOCOL.md). */
const RECONNECT_CODES = new Set([1005, 1006, 1011, 1012, 1013, 1014, 4000])
const JUMP_CODE = 4000
/** `WebSocket.CONNECTING`, where the constructor may not carry the constants. */
const CONNECTING = 0
const STAMP_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** A client of a WSE server. See the README's "In the browser" for a walk-through. */
export class WseClient {
  #url
  #protocol
  #timeout
  #reconnect
  #WebSocket
  #status = Status.IDLE
  #identity = null
  #meta = {}
  #solver = null
  /** The current socket with what belongs to it: pending calls, the connect promise. */
  #link = null
  #retryTimer = null
  #attempt = 0
  #messageHandlers = new Map()
  #procedures = new Map()
  #listeners = { status: new Set(), ready: new Set(), close: new Set(), error: new Set(), ignored: new Set() }

  /**
   * @param {object} options see `WseClientOptions` in index.d.ts.
   */
  constructor (options) {
    const { url, protocol = Json, timeout = 20_000, reconnect = true, WebSocket } = options ?? {}
    if (typeof url !== 'string' && !(url instanceof URL)) throw new TypeError('options.url is required')
    this.#url = String(url)
    this.#protocol = protocol
    this.#timeout = checkedTimeout(timeout)
    this.#reconnect = reconnect === false
      ? null
      : { base: 1000, max: 30_000, ...(reconnect === true ? {} : reconnect) }
    if (this.#reconnect !== null) {
      const { base, max } = this.#reconnect
      // A base of 0 would retry in a tight loop against a server that is down.
      if (!(base >= 1) || !(max >= base)) throw new TypeError('reconnect needs 1 <= base <= max (ms)')
    }
    this.#WebSocket = WebSocket ?? globalThis.WebSocket
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError('no WebSocket here: pass options.WebSocket (Node 20 needs --experimental-websocket)')
    }
    /** Rooms this client's connection is in; rejoined after a reconnection. */
    this.rooms = new Rooms(this)
    /** Who is online; resubscribed after a reconnection. */
    this.presence = new Presence(this)
    /** Private messages to and from other users. */
    this.dm = new DirectMessages(this)
  }

  /** The endpoint this client connects to (changed by `jump`). */
  get url () { return this.#url }

  /** Where the client is: one of `Status`. */
  get status () { return this.#status }

  /** The codec in use. */
  get protocol () { return this.#protocol }

  /**
   * Opens the connection and authenticates: resolves with the server's welcome; rejects with
   * `wse.not-authorized` when refused, with the server's close reason when it closes first,
   * or with `wse.client.ws-error` when the socket cannot open.
   */
  connect (identity, meta = {}) {
    if (this.#link !== null || this.#retryTimer !== null) {
      return Promise.reject(new WseError(Code.ALREADY_CONNECTED))
    }
    this.#identity = identity ?? null
    this.#meta = meta ?? {}
    this.#attempt = 0
    return this.#open(Status.CONNECTING)
  }

  /**
   * Sets the challenge solver: called with the server's quest, returns (or resolves to) the
   * solution. `hmacSolver(secret)` solves the standard HMAC challenge.
   */
  challenge (solver) {
    if (typeof solver !== 'function') throw new WseError(Code.INVALID_CRA_HANDLER)
    this.#solver = solver
  }

  /**
   * Calls the server's procedure `name`: resolves with its result, rejects with a `WseError`
   * holding the server's code and details, `wse.client.rp.timeout` after `timeout` ms,
   * `wse.client.rp.disconnect` when the connection closes first, `wse.client.not-ready`
   * before the welcome; with `signal`, rejects with its reason when it aborts.
   */
  call (name, payload = null, { timeout = this.#timeout, signal } = {}) {
    if (!isApplicationType(name)) return Promise.reject(new TypeError(`not a procedure name: ${JSON.stringify(name)}`))
    let limit
    try {
      limit = checkedTimeout(timeout)
    } catch (error) {
      return Promise.reject(error)
    }
    const link = this.#link
    if (link === null || this.#status !== Status.READY) {
      return Promise.reject(new WseError(Code.NOT_READY))
    }
    if (signal?.aborted) return Promise.reject(signal.reason)
    let stamp
    do stamp = randomStamp(); while (link.pending.has(stamp))
    return new Promise((resolve, reject) => {
      const settle = (outcome) => {
        link.pending.delete(stamp)
        clearTimeout(timer)
        signal?.removeEventListener('abort', abort)
        outcome()
      }
      const timer = limit === Infinity
        ? undefined
        : setTimeout(() => settle(() => reject(new WseError(Code.RP_TIMEOUT, { rpc: name }))), limit)
      const abort = () => settle(() => reject(signal.reason))
      signal?.addEventListener('abort', abort, { once: true })
      link.pending.set(stamp, {
        resolve: (result) => settle(() => resolve(result)),
        reject: (error) => settle(() => reject(error))
      })
      try {
        this.#write(link, [name, payload ?? null, stamp])
      } catch (error) {
        // A payload the codec cannot encode (a BigInt, a cycle) fails this call alone.
        settle(() => reject(error))
      }
    })
  }

  /** Sends a one-way message; throws `wse.client.not-ready` before the welcome. */
  send (type, payload = null) {
    if (!isApplicationType(type)) throw new TypeError(`not a message type: ${JSON.stringify(type)}`)
    const link = this.#link
    if (link === null || this.#status !== Status.READY) throw new WseError(Code.NOT_READY)
    this.#write(link, [type, payload ?? null, null])
  }

  /**
   * Handles messages of `type` from the server: `handler(payload, type)`. Returns a function
   * that removes the handler.
   */
  on (type, handler) {
    let handlers = this.#messageHandlers.get(type)
    if (handlers === undefined) this.#messageHandlers.set(type, handlers = new Set())
    handlers.add(handler)
    return () => {
      handlers.delete(handler)
      if (handlers.size === 0 && this.#messageHandlers.get(type) === handlers) this.#messageHandlers.delete(type)
    }
  }

  /**
   * Registers a procedure the server may call on this connection: `handler(payload)` returns
   * (or resolves to) the result; a thrown `WseError` answers with its code and details, any
   * other throw with `wse.server.rp.failed`. Throws `wse.server.rp.already-registered` for a
   * name registered twice.
   */
  register (name, handler) {
    if (this.#procedures.has(name)) throw new WseError(Code.RP_ALREADY_REGISTERED, { rpc: name })
    this.#procedures.set(name, handler)
  }

  /** Removes a registered procedure; whether it was registered. */
  unregister (name) {
    return this.#procedures.delete(name)
  }

  /** `fn(status)` on every status change. Returns a function that removes it. */
  onStatus (fn) { return this.#listen('status', fn) }
  /** `fn(welcome, {reconnected})` on every welcome. Returns a function that removes it. */
  onReady (fn) { return this.#listen('ready', fn) }
  /** `fn(code, reason)` when a connection closes. Returns a function that removes it. */
  onClose (fn) { return this.#listen('close', fn) }
  /** `fn(error)` on a transport or protocol error. Returns a function that removes it. */
  onError (fn) { return this.#listen('error', fn) }
  /** `fn(type, payload)` for a message no handler took. Returns a function that removes it. */
  onIgnored (fn) { return this.#listen('ignored', fn) }

  /**
   * Leaves for another server: closes with 4000 `jump` and connects to `url` with the same
   * identity and meta unless new ones are given; resolves with the new server's welcome.
   */
  jump (url, identity = this.#identity, meta = this.#meta) {
    this.#stop(JUMP_CODE, Reason.JUMP)
    this.#url = String(url)
    return this.connect(identity, meta)
  }

  /** Closes the connection for good (no reconnection), with `reason` (default `wse.by-client`). */
  close (reason = Reason.BY_CLIENT) {
    // A close frame holds at most 123 bytes of reason; WebSocket.close() would throw and
    // leave the socket open.
    if (typeof reason !== 'string' || new TextEncoder().encode(reason).length > 123) {
      throw new TypeError('a close reason is a string of at most 123 UTF-8 bytes')
    }
    this.#stop(1000, reason, Status.OFFLINE)
  }

  #listen (event, fn) {
    this.#listeners[event].add(fn)
    return () => this.#listeners[event].delete(fn)
  }

  #emit (event, ...args) {
    for (const fn of [...this.#listeners[event]]) {
      try {
        fn(...args)
      } catch (error) {
        // One listener's bug must not stop the others nor the socket's handling.
        queueMicrotask(() => { throw error })
      }
    }
  }

  #setStatus (status) {
    if (this.#status === status) return
    this.#status = status
    this.#emit('status', status)
  }

  /**
   * Ends the current socket and any pending retry, failing what waited on it; then takes
   * `status` (when given) before the close listeners run.
   */
  #stop (code, reason, status = undefined) {
    clearTimeout(this.#retryTimer)
    this.#retryTimer = null
    const link = this.#link
    this.#link = null
    if (link !== null) {
      try {
        link.ws.close(code, reason)
      } catch {
        // Already closing: nothing more to say to it.
      }
      this.#release(link, new WseError(reason === Reason.JUMP ? Code.RP_DISCONNECT : reason))
    }
    if (status !== undefined) this.#setStatus(status)
    if (link !== null) this.#emit('close', code, reason)
  }

  /** Fails a socket's pending calls and its connect promise. */
  #release (link, connectError) {
    for (const call of link.pending.values()) call.reject(new WseError(Code.RP_DISCONNECT))
    link.pending.clear()
    link.reject?.(connectError)
    link.resolve = link.reject = null
  }

  #open (status) {
    return new Promise((resolve, reject) => {
      let ws
      try {
        ws = new this.#WebSocket(this.#url, this.#protocol.name)
      } catch (error) {
        reject(new WseError(Code.WS_ERROR, String(error?.message ?? error)))
        this.#setStatus(Status.OFFLINE)
        return
      }
      if (this.#protocol.binary) ws.binaryType = 'arraybuffer'
      const link = { ws, pending: new Map(), welcomed: false, resolve, reject }
      this.#link = link
      // Told once the socket is ours: a status listener that calls connect() finds it.
      this.#setStatus(status)
      ws.onopen = () => {
        if (this.#link !== link) return
        this.#write(link, [HI, { identity: this.#identity, meta: this.#meta }, null])
      }
      ws.onmessage = (event) => {
        if (this.#link === link) this.#receive(link, event.data)
      }
      ws.onerror = () => {
        if (this.#link !== link) return
        this.#emit('error', new WseError(Code.WS_ERROR))
        // A socket that never opened is done: browsers say so with a close event too, but
        // Node 20's WebSocket never does, and would leave connect() waiting forever.
        if (ws.readyState === CONNECTING) {
          // Done with it first: closing a socket that never opened fires error again.
          this.#closed(link, 1006, '')
          try {
            ws.close()
          } catch {
            // Nothing to close yet.
          }
        }
      }
      ws.onclose = (event) => {
        if (this.#link === link) this.#closed(link, event.code, event.reason)
      }
    })
  }

  #closed (link, code, reason) {
    this.#link = null
    const connectError = reason === Reason.NOT_AUTHORIZED
      ? new WseError(Code.NOT_AUTHORIZED)
      : new WseError(reason || Code.WS_ERROR, { code })
    // Retry only what was once welcomed (the first connect reports its failure instead),
    // only on the codes that mean "come back", never after a refusal, a logout or a 1000.
    const retrying = this.#reconnect !== null && RECONNECT_CODES.has(code) &&
      (link.welcomed || this.#status === Status.RECONNECTING)
    // Everything is decided and in place before any listener runs, so that a listener that
    // calls connect() or close() finds the client as it will be.
    if (retrying) {
      const { base, max } = this.#reconnect
      const ceiling = Math.min(max, base * 2 ** Math.min(this.#attempt, 16))
      const delay = code === JUMP_CODE ? 0 : Math.min(max, ceiling * (1 + Math.random()))
      this.#attempt += 1
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null
        if (this.#link !== null) return
        // Each failed attempt is told by its close (and error) events already.
        this.#open(Status.RECONNECTING).catch(() => {})
      }, delay)
    }
    this.#release(link, connectError)
    this.#setStatus(retrying ? Status.RECONNECTING : Status.OFFLINE)
    this.#emit('close', code, reason)
  }

  #write (link, frame) {
    link.ws.send(this.#protocol.encode(frame))
  }

  #receive (link, data) {
    let frame
    try {
      frame = readFrame(this.#protocol.decode(data))
    } catch {
      frame = null
    }
    if (frame === null) {
      this.#emit('error', new WseError(Code.PROTOCOL_VIOLATION, undefined, 'a message that is not a WSE frame'))
      return
    }
    if (!link.welcomed) {
      this.#handshake(link, frame)
      return
    }
    const { type, payload, stamp } = frame
    if (stamp !== null && (type === RESPONSE || type === RESPONSE_ERR)) {
      // A response to no call of ours is dropped: answering it would let two peers bounce
      // errors forever.
      const call = link.pending.get(stamp)
      if (call === undefined) {
        this.#emit('ignored', type, payload)
        return
      }
      if (type === RESPONSE) call.resolve(payload)
      else call.reject(WseError.fromWire(payload))
    } else if (stamp !== null) {
      this.#serve(link, type, payload, stamp)
    } else {
      const handlers = this.#messageHandlers.get(type)
      if (handlers === undefined) {
        this.#emit('ignored', type, payload)
        return
      }
      for (const handler of [...handlers]) {
        try {
          handler(payload, type)
        } catch (error) {
          queueMicrotask(() => { throw error })
        }
      }
    }
  }

  #handshake (link, { type, payload }) {
    if (type === CHALLENGE) {
      this.#solve(link, payload)
    } else if (type === WELCOME) {
      link.welcomed = true
      const reconnected = this.#status === Status.RECONNECTING
      this.#attempt = 0
      this.#setStatus(Status.READY)
      link.resolve?.(payload)
      link.resolve = link.reject = null
      this.#emit('ready', payload, { reconnected })
    }
    // Anything else before the welcome is not for us yet; the server ignores the same.
  }

  async #solve (link, quest) {
    if (this.#solver === null) {
      this.#stop(1000, Code.INVALID_CRA_HANDLER, Status.OFFLINE)
      return
    }
    let solution
    try {
      solution = await this.#solver(quest)
    } catch (error) {
      this.#emit('error', error instanceof WseError ? error : new WseError(Code.INVALID_CRA_HANDLER))
      if (this.#link === link) {
        this.#stop(1000, Code.INVALID_CRA_HANDLER, Status.OFFLINE)
      }
      return
    }
    if (this.#link !== link) return
    try {
      this.#write(link, [CHALLENGE, solution ?? null, null])
    } catch {
      this.#emit('error', new WseError(Code.INVALID_CRA_HANDLER, undefined, 'the solution cannot be encoded'))
      this.#stop(1000, Code.INVALID_CRA_HANDLER, Status.OFFLINE)
    }
  }

  async #serve (link, name, payload, stamp) {
    const procedure = this.#procedures.get(name)
    let answer
    if (procedure === undefined) {
      answer = [RESPONSE_ERR, { code: Code.RP_NOT_REGISTERED }, stamp]
    } else {
      try {
        answer = [RESPONSE, (await procedure(payload)) ?? null, stamp]
      } catch (error) {
        // Our own code and details only: never a stack trace or internal state.
        const wire = error instanceof WseError ? error.toWire() : { code: Code.RP_FAILED }
        if (wire.details !== null && typeof wire.details === 'object' && !Array.isArray(wire.details)) {
          wire.details = { ...wire.details, rpc: name }
        }
        answer = [RESPONSE_ERR, wire, stamp]
      }
    }
    if (this.#link !== link) return
    try {
      this.#write(link, answer)
    } catch {
      // A result the codec cannot encode is the procedure's failure, not the client's.
      this.#write(link, [RESPONSE_ERR, { code: Code.RP_FAILED }, stamp])
    }
  }
}

/** A type or procedure name an application may use: non-empty, not the protocol's own. */
function isApplicationType (name) {
  return typeof name === 'string' && name !== '' && !name.startsWith(RESERVED)
}

/** Milliseconds a timer can wait (Infinity: no timer); else a TypeError. */
function checkedTimeout (ms) {
  if (ms === Infinity) return ms
  // setTimeout fires at once past 2^31 - 1 ms.
  if (typeof ms !== 'number' || !(ms >= 1) || ms > 2 ** 31 - 1) {
    throw new TypeError('a timeout is a number of ms from 1 to 2^31 - 1, or Infinity')
  }
  return ms
}

function randomStamp () {
  const bytes = crypto.getRandomValues(new Uint8Array(10))
  let stamp = ''
  for (const byte of bytes) stamp += STAMP_ALPHABET[byte % STAMP_ALPHABET.length]
  return stamp
}
