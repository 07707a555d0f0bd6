// Helpers for what wse-rs adds to the protocol, over its built-in procedures: rooms, presence
// and private messages. Each is plain calls and messages, so any server that registers the
// same procedures works; each puts its state back after a reconnection, since rooms and
// subscriptions belong to a connection and die with it.

/** The message type presence changes arrive under. */
export const PRESENCE_MESSAGE = 'presence'
/** The message type private messages arrive under. */
export const DM_MESSAGE = 'dm'

/** The rooms this connection is in: `rooms.join`, `rooms.leave`, `rooms.mine`. */
export class Rooms {
  #client
  #joined = new Set()

  constructor (client) {
    this.#client = client
    client.onReady((_welcome, { reconnected }) => {
      if (!reconnected) {
        this.#joined.clear()
        return
      }
      for (const room of [...this.#joined]) {
        client.call('rooms.join', { room }).catch((error) => {
          // A room the server refuses now is one we are no longer in; a rejoin cut short
          // on our side (another drop, a timeout) is tried again at the next welcome.
          if (!isClientSide(error)) this.#joined.delete(room)
        })
      }
    })
  }

  /** Joins `room`: resolves true when joined now, false when already in it. */
  async join (room) {
    const joined = await this.#client.call('rooms.join', { room })
    this.#joined.add(room)
    return joined
  }

  /** Leaves `room`: resolves whether this connection was in it. */
  async leave (room) {
    this.#joined.delete(room)
    return this.#client.call('rooms.leave', { room })
  }

  /** The rooms this connection is in, as the server sees them, sorted. */
  mine () {
    return this.#client.call('rooms.mine', {})
  }
}

/**
 * Who is online: a snapshot from `presence.subscribe` kept current by `presence` messages.
 * Each change carries a version from one counter that only grows, and a change older than
 * what is held for its user is dropped, so a late message never overwrites a newer state.
 */
export class Presence {
  #client
  #subscribed = false
  /** user → the newest entry seen, online or not (an offline one keeps its version). */
  #entries = new Map()
  /** The entries of a subscription whose snapshot is on its way, else null. */
  #building = null
  #listeners = new Set()

  constructor (client) {
    this.#client = client
    client.on(PRESENCE_MESSAGE, (entry) => {
      // Changes may overtake the snapshot's answer: they go into the list being built.
      if (this.#building !== null) apply(this.#building, entry)
      else if (this.#subscribed && apply(this.#entries, entry)) this.#changed(entry)
    })
    // A subscription dies with its connection: it is renewed at every welcome (after a
    // reconnection, a jump or a new connect), from a new snapshot, since a restarted server
    // starts its versions over.
    client.onReady(() => {
      if (this.#subscribed) this.subscribe().catch(() => {})
    })
  }

  /**
   * Subscribes to presence changes: resolves with the online list it starts from. Listeners
   * added with `onChange` hear every change from then on.
   */
  async subscribe () {
    const building = new Map()
    this.#building = building
    this.#subscribed = true
    let snapshot
    try {
      snapshot = await this.#client.call('presence.subscribe', {})
    } catch (error) {
      if (this.#building === building) {
        this.#building = null
        // Refused: no subscription. Cut short on our side: renewed at the next welcome.
        if (!isClientSide(error)) this.#end()
      }
      throw error
    }
    if (this.#building !== building) return this.list() // a newer subscribe took over
    for (const entry of Array.isArray(snapshot) ? snapshot : []) apply(building, entry)
    this.#building = null
    this.#entries = building
    this.#changed(null)
    return this.list()
  }

  /** Ends the subscription and empties the list; resolves whether there was one. */
  unsubscribe () {
    this.#building = null
    this.#end()
    return this.#client.call('presence.unsubscribe', {})
  }

  /** The online list asked of the server now, without subscribing. */
  online () {
    return this.#client.call('presence.online', {})
  }

  /** The online users as last known, sorted by user id. */
  list () {
    return [...this.#entries.values()]
      .filter((entry) => entry.online)
      .sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0))
  }

  /**
   * `fn(list, change)` after each applied change (`change` null for a new snapshot, or the
   * list emptied when the subscription ends). Returns a function that removes it.
   */
  onChange (fn) {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  #end () {
    this.#subscribed = false
    this.#entries = new Map()
    this.#changed(null)
  }

  #changed (change) {
    const list = this.list()
    for (const fn of [...this.#listeners]) fn(list, change)
  }
}

/** Puts `entry` into `entries` when it is newer than what they hold; whether it was. */
function apply (entries, entry) {
  if (entry === null || typeof entry !== 'object' || typeof entry.user !== 'string') return false
  const version = Number(entry.version)
  if (!Number.isFinite(version)) return false
  const held = entries.get(entry.user)
  if (held !== undefined && !(version > Number(held.version))) return false
  entries.set(entry.user, entry)
  return true
}

/** Whether a call failed on the client's side (a drop, a timeout), not by the server's answer. */
function isClientSide (error) {
  return typeof error?.code === 'string' && error.code.startsWith('wse.client.')
}

/** Private messages: `dm.send {to, payload}` and the `dm` messages that arrive. */
export class DirectMessages {
  #client

  constructor (client) {
    this.#client = client
  }

  /**
   * Sends `payload` to every device of user `to`: resolves true when delivered, false when
   * `to` is offline or unavailable; rejects with the server's error when refused.
   */
  send (to, payload) {
    return this.#client.call('dm.send', { to, payload })
  }

  /** `fn({from, payload})` for each private message. Returns a function that removes it. */
  onMessage (fn) {
    return this.#client.on(DM_MESSAGE, fn)
  }
}
