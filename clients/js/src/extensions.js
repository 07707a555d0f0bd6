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
      for (const room of this.#joined) {
        // A room the server no longer lets us into is one we are no longer in.
        client.call('rooms.join', { room }).catch(() => this.#joined.delete(room))
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
  #listeners = new Set()

  constructor (client) {
    this.#client = client
    client.on(PRESENCE_MESSAGE, (entry) => {
      if (this.#subscribed && this.#apply(entry)) this.#changed(entry)
    })
    client.onReady((_welcome, { reconnected }) => {
      // The subscription died with the old connection; a failure to renew it leaves the
      // list as it was and unsubscribed, as a failed subscribe() would.
      if (reconnected && this.#subscribed) this.subscribe().catch(() => {})
    })
  }

  /**
   * Subscribes to presence changes: resolves with the online list it starts from. Listeners
   * added with `onChange` hear every change from then on.
   */
  async subscribe () {
    // A new subscription starts from its own snapshot (versions start over when a server
    // restarts). Changes may arrive before the snapshot's answer does: they are applied as
    // they come, and the snapshot's entries only where they are newer.
    this.#entries = new Map()
    this.#subscribed = true
    let snapshot
    try {
      snapshot = await this.#client.call('presence.subscribe', {})
    } catch (error) {
      this.#subscribed = false
      throw error
    }
    for (const entry of Array.isArray(snapshot) ? snapshot : []) this.#apply(entry)
    this.#changed(null)
    return this.list()
  }

  /** Ends the subscription; resolves whether there was one. */
  async unsubscribe () {
    this.#subscribed = false
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
   * `fn(list, change)` after each applied change (`change` null for a new snapshot).
   * Returns a function that removes it.
   */
  onChange (fn) {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** Applies one entry when it is newer than what is held; whether it was. */
  #apply (entry) {
    if (entry === null || typeof entry !== 'object' || typeof entry.user !== 'string') return false
    const version = Number(entry.version)
    const held = this.#entries.get(entry.user)
    if (held !== undefined && !(version > Number(held.version))) return false
    this.#entries.set(entry.user, entry)
    return true
  }

  #changed (change) {
    const list = this.list()
    for (const fn of [...this.#listeners]) fn(list, change)
  }
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
