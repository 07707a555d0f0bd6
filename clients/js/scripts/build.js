// Builds dist/wse.js: the client and its MessagePack codec in one ES module, for a page's
// <script type="module"> with no bundler. `--check` builds in memory and fails when the
// committed file differs, so the shipped file never drifts from src/.

import { readFile, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
const outfile = `${root}dist/wse.js`
const check = process.argv.includes('--check')

const { version } = JSON.parse(await readFile(`${root}package.json`, 'utf8'))
const msgpack = JSON.parse(await readFile(`${root}node_modules/@msgpack/msgpack/package.json`, 'utf8'))
const banner = [
  `// wse-rs-client ${version}: built from clients/js/src by \`npm run build\`; do not edit.`,
  `// Bundles @msgpack/msgpack ${msgpack.version} (${msgpack.license}, https://github.com/msgpack/msgpack-javascript).`
].join('\n')
const result = await build({
  entryPoints: [`${root}src/index.js`],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  platform: 'browser',
  legalComments: 'inline',
  banner: { js: banner },
  write: false,
  outfile
})
const built = result.outputFiles[0].text

if (check) {
  const shipped = await readFile(outfile, 'utf8').catch(() => '')
  if (shipped !== built) {
    console.error('dist/wse.js is not what src/ builds: run `npm run build` in clients/js')
    process.exit(1)
  }
} else {
  await writeFile(outfile, built)
  console.log(`wrote ${outfile} (${built.length} bytes)`)
}
