// Types of wse-rs-client. The module is plain JavaScript (src/*.js); these describe it.

/** A codec: how a frame `[type, payload, stamp]` travels as one WebSocket message. */
export interface Protocol {
  /** The WebSocket subprotocol that names it. */
  readonly name: string
  /** Whether its messages are binary (else text). */
  readonly binary: boolean
  encode (frame: [string, unknown, string | null]): string | Uint8Array
  decode (data: string | ArrayBuffer | Uint8Array): unknown
}

/** JSON text frames, `wse-default-json`. */
export const Json: Protocol
/** MessagePack binary frames, `wse-msgpack`. */
export const MessagePack: Protocol

export type StatusName = 'idle' | 'connecting' | 'ready' | 'reconnecting' | 'offline'

export const Status: Readonly<{
  IDLE: 'idle'
  CONNECTING: 'connecting'
  READY: 'ready'
  RECONNECTING: 'reconnecting'
  OFFLINE: 'offline'
}>

export const Reason: Readonly<{
  NOT_AUTHORIZED: 'wse.not-authorized'
  PROTOCOL_ERROR: 'wse.protocol-error'
  CLIENTS_CONCURRENCY: 'wse.clients-concurrency'
  BY_CLIENT: 'wse.by-client'
  BY_SERVER: 'wse.by-server'
  LOGOUT: 'wse.logout'
  JUMP: 'jump'
}>

export const Code: Readonly<{
  RP_TIMEOUT: 'wse.client.rp.timeout'
  RP_DISCONNECT: 'wse.client.rp.disconnect'
  NOT_READY: 'wse.client.not-ready'
  ALREADY_CONNECTED: 'wse.client.already-connected'
  WS_ERROR: 'wse.client.ws-error'
  INVALID_CRA_HANDLER: 'wse.client.invalid-cra-handler'
  NOT_AUTHORIZED: 'wse.not-authorized'
  RP_FAILED: 'wse.server.rp.failed'
  RP_NOT_REGISTERED: 'wse.server.rp.not-registered'
  RP_ALREADY_REGISTERED: 'wse.server.rp.already-registered'
  PROTOCOL_VIOLATION: 'wse.server.protocol-violation'
}>

/** A failure with the protocol's code and the details the other side sent. */
export class WseError extends Error {
  constructor (code: string, details?: unknown, message?: string)
  readonly code: string
  readonly details: unknown
  /** The protocol's error object `{code, message?, details?}`. */
  toWire (): { code: string, message?: string, details?: unknown }
  static fromWire (payload: unknown): WseError
}

export interface ReconnectOptions {
  /** The first retry waits base to 2×base ms (default 1000, at least 1); each later one twice as long. */
  base?: number
  /** No retry waits longer (default 30000 ms). */
  max?: number
}

export interface WseClientOptions {
  /** The endpoint, `ws://` or `wss://`. */
  url: string | URL
  /** The codec (default `Json`). */
  protocol?: Protocol
  /** Default call timeout in ms, 1 to 2^31 - 1 or Infinity (default 20000). */
  timeout?: number
  /** Reconnect after the protocol's "come back" close codes (default true). */
  reconnect?: boolean | ReconnectOptions
  /** A WebSocket constructor, where there is no global one. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket
}

export interface CallOptions {
  /** This call's timeout in ms, 1 to 2^31 - 1 or Infinity. */
  timeout?: number
  /** Aborts the wait: the call rejects with the signal's reason. */
  signal?: AbortSignal
}

/** Any JSON-shaped value a frame can carry. */
export type Payload = unknown

/** A user's presence: an entry of the online list and the payload of a `presence` message. */
export interface PresenceEntry {
  user: string
  online: boolean
  devices: number
  alias: string
  version: number
}

/** A private message as delivered. */
export interface DirectMessage<T = Payload> {
  from: string
  payload: T
}

export class WseClient {
  constructor (options: WseClientOptions)
  readonly url: string
  readonly status: StatusName
  readonly protocol: Protocol
  readonly rooms: Rooms
  readonly presence: Presence
  readonly dm: DirectMessages

  /** Opens and authenticates; resolves with the welcome. */
  connect<W = Payload> (identity: unknown, meta?: Record<string, unknown>): Promise<W>
  /** Sets the challenge solver (see `hmacSolver`). */
  challenge (solver: (quest: any) => unknown | Promise<unknown>): void
  /** Calls a server procedure. */
  call<R = Payload> (name: string, payload?: Payload, options?: CallOptions): Promise<R>
  /** Sends a one-way message. */
  send (type: string, payload?: Payload): void
  /** Handles messages of `type`; returns the remover. */
  on<T = any> (type: string, handler: (payload: T, type: string) => void): () => void
  /** Registers a procedure the server may call. */
  register<A = any, R = unknown> (name: string, handler: (payload: A) => R | Promise<R>): void
  unregister (name: string): boolean
  onStatus (fn: (status: StatusName) => void): () => void
  onReady<W = Payload> (fn: (welcome: W, info: { reconnected: boolean }) => void): () => void
  onClose (fn: (code: number, reason: string) => void): () => void
  onError (fn: (error: WseError) => void): () => void
  onIgnored (fn: (type: string, payload: Payload) => void): () => void
  /** Leaves for another server (close 4000 `jump`), resolving with its welcome. */
  jump<W = Payload> (url: string | URL, identity?: unknown, meta?: Record<string, unknown>): Promise<W>
  /** Closes for good. */
  close (reason?: string): void
}

export class Rooms {
  /** Made by the client: `client.rooms`. */
  private constructor ()
  join (room: string): Promise<boolean>
  leave (room: string): Promise<boolean>
  mine (): Promise<string[]>
}

export class Presence {
  /** Made by the client: `client.presence`. */
  private constructor ()
  subscribe (): Promise<PresenceEntry[]>
  unsubscribe (): Promise<boolean>
  online (): Promise<PresenceEntry[]>
  list (): PresenceEntry[]
  onChange (fn: (list: PresenceEntry[], change: PresenceEntry | null) => void): () => void
}

export class DirectMessages {
  /** Made by the client: `client.dm`. */
  private constructor ()
  send (to: string, payload: Payload): Promise<boolean>
  onMessage<T = Payload> (fn: (message: DirectMessage<T>) => void): () => void
}

/** The solver of the standard HMAC challenge, on WebCrypto. */
export function hmacSolver (secret: string): (quest: { timestamp: number, nonce: string }) => Promise<string>

export const PRESENCE_MESSAGE: 'presence'
export const DM_MESSAGE: 'dm'
