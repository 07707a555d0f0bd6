// The protocol's error codes and the one error type every failure of the client carries.

/** The error codes of the protocol (PROTOCOL.md, "Codes used by the protocol"). */
export const Code = Object.freeze({
  RP_TIMEOUT: 'wse.client.rp.timeout',
  RP_DISCONNECT: 'wse.client.rp.disconnect',
  NOT_READY: 'wse.client.not-ready',
  ALREADY_CONNECTED: 'wse.client.already-connected',
  WS_ERROR: 'wse.client.ws-error',
  INVALID_CRA_HANDLER: 'wse.client.invalid-cra-handler',
  NOT_AUTHORIZED: 'wse.not-authorized',
  RP_FAILED: 'wse.server.rp.failed',
  RP_NOT_REGISTERED: 'wse.server.rp.not-registered',
  RP_ALREADY_REGISTERED: 'wse.server.rp.already-registered',
  PROTOCOL_VIOLATION: 'wse.server.protocol-violation'
})

/**
 * A failure with the protocol's code: a call the other side answered with an error (its code
 * and details as sent), or one of the client's own (`wse.client.*`). A procedure registered
 * with the client throws one to answer with its own code.
 */
export class WseError extends Error {
  /**
   * @param {string} code
   * @param {unknown} [details]
   * @param {string} [message]
   */
  constructor (code, details = undefined, message = undefined) {
    super(message ?? code)
    this.name = 'WseError'
    this.code = code
    this.details = details
  }

  /** The protocol's error object for this error. */
  toWire () {
    const wire = { code: this.code }
    if (this.message !== this.code) wire.message = this.message
    if (this.details !== undefined) wire.details = this.details
    return wire
  }

  /** The error a `~wse:response-err` payload stands for. */
  static fromWire (payload) {
    if (payload !== null && typeof payload === 'object' && typeof payload.code === 'string') {
      const message = typeof payload.message === 'string' ? payload.message : undefined
      return new WseError(payload.code, payload.details ?? undefined, message)
    }
    // A peer that answers with something else still fails the call, with what it sent.
    return new WseError(Code.RP_FAILED, payload)
  }
}
