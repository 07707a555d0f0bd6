// The standard HMAC challenge's solver, on WebCrypto (browsers in a secure context, Node 20+).

import { Code, WseError } from './errors.js'

/**
 * A challenge solver for the standard HMAC challenge: answers the quest
 * `{timestamp, nonce}` with the lowercase hex of HMAC-SHA256(secret, timestamp digits + nonce).
 *
 * @param {string} secret the user's secret.
 * @returns {(quest: {timestamp: number, nonce: string}) => Promise<string>}
 */
export function hmacSolver (secret) {
  const subtle = globalThis.crypto?.subtle
  if (!subtle) {
    // Browsers leave WebCrypto out of pages that are not a secure context (plain http
    // other than localhost): say so instead of failing on an undefined deep inside.
    throw new WseError(Code.INVALID_CRA_HANDLER, undefined,
      'WebCrypto is not available here (a page served over plain http other than localhost?)')
  }
  const encoder = new TextEncoder()
  const key = subtle.importKey('raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' },
    false, ['sign'])
  // A key WebCrypto refuses (an empty secret) fails each solve, where the client reports it;
  // unobserved until then, its rejection would count as unhandled.
  key.catch(() => {})
  return async (quest) => {
    if (quest === null || typeof quest !== 'object' || !Number.isSafeInteger(quest.timestamp) ||
        typeof quest.nonce !== 'string') {
      throw new WseError(Code.INVALID_CRA_HANDLER, undefined,
        'the quest is not the standard HMAC challenge {timestamp, nonce}')
    }
    const signature = await subtle.sign('HMAC', await key, encoder.encode(`${quest.timestamp}${quest.nonce}`))
    return Array.from(new Uint8Array(signature), (byte) => byte.toString(16).padStart(2, '0')).join('')
  }
}
