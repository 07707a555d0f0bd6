// The shipped files: dist/wse.js is what src/ builds, and the types describe the module.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))

test('dist/wse.js is what src/ builds', async () => {
  await run(process.execPath, ['scripts/build.js', '--check'], { cwd: root })
})

test('the built file exports what the source does', async () => {
  const built = await import('../dist/wse.js')
  const source = await import('../src/index.js')
  assert.deepEqual(Object.keys(built).sort(), Object.keys(source).sort())
})

test('the TypeScript types compile against a typical use', async () => {
  const tsc = fileURLToPath(new URL('../node_modules/typescript/bin/tsc', import.meta.url))
  await run(process.execPath, [tsc, '-p', 'test/types'], { cwd: root })
})
