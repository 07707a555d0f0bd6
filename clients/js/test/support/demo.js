// Starts the real demo server for a test: the binary named by WSE_DEMO_BIN (the Rust test
// that runs these suites sets it), or the workspace's debug build.

import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { existsSync } from 'node:fs'

const binary = process.env.WSE_DEMO_BIN ??
  fileURLToPath(new URL('../../../../target/debug/demo', import.meta.url))

/** How long any one wait of a test may take. */
export const PATIENCE = 20_000

/**
 * A demo process on free ports. `restart()` stops it gracefully (SIGTERM: its clients get
 * 1012) and starts it again on the same ports.
 */
export class Demo {
  #child = null
  #ports = null

  static async start (...args) {
    const demo = new Demo()
    demo.args = args
    await demo.#spawn(['--port', '0', '--hmac-port', '0', ...args])
    return demo
  }

  /** `ws://127.0.0.1:PORT` of the plain port. */
  get url () { return `ws://${this.#ports.plain}` }
  /** `ws://127.0.0.1:PORT` of the HMAC challenge port. */
  get hmacUrl () { return `ws://${this.#ports.hmac}` }
  /** The page's address. */
  get page () { return `http://${this.#ports.plain}/` }

  async restart () {
    await this.stop()
    const [plain, hmac] = [this.#ports.plain, this.#ports.hmac].map((addr) => addr.split(':')[1])
    // The port was ours a moment ago; a retry covers a socket the kernel still holds.
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#spawn(['--port', plain, '--hmac-port', hmac, ...this.args])
        return
      } catch (error) {
        if (attempt >= 20) throw error
        await new Promise((resolve) => setTimeout(resolve, 250))
      }
    }
  }

  async stop () {
    const child = this.#child
    if (child === null) return
    this.#child = null
    if (child.exitCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), PATIENCE)
    await exited
    clearTimeout(timer)
  }

  #spawn (args) {
    if (!existsSync(binary)) {
      throw new Error(`no demo binary at ${binary}: build it (cargo build -p wse-examples) or set WSE_DEMO_BIN`)
    }
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'ignore'] })
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('the demo did not say where it listens')) }, PATIENCE)
      child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`the demo exited with ${code} before it listened`)) })
      createInterface({ input: child.stdout }).once('line', (line) => {
        clearTimeout(timer)
        const found = [...line.matchAll(/ws:\/\/([0-9.]+:[0-9]+)/g)].map((match) => match[1])
        if (found.length !== 2) {
          child.kill('SIGKILL')
          reject(new Error(`unexpected first line: ${line}`))
          return
        }
        child.removeAllListeners('exit')
        this.#child = child
        this.#ports = { plain: found[0], hmac: found[1] }
        resolve()
      })
    })
  }
}

/** Resolves when `predicate()` holds, checking every 20 ms; fails after PATIENCE. */
export async function eventually (what, predicate) {
  const deadline = Date.now() + PATIENCE
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${PATIENCE} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** The next message of `type` a client receives. */
export function next (client, type) {
  return new Promise((resolve) => {
    const off = client.on(type, (payload) => { off(); resolve(payload) })
  })
}
