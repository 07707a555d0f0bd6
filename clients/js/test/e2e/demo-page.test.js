// The demo page in headless Chromium (Debian's, driven by playwright-core) against the real
// demo server: one user on two browser contexts, a room chat, presence, a private message,
// a server → client call, a refusal, and a reconnection through a server restart.

import { after, afterEach, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { WseClient } from '../../src/index.js'
import { Demo, PATIENCE } from '../support/demo.js'

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium'
const artifacts = process.env.WSE_ARTIFACTS ??
  fileURLToPath(new URL('../../../../target/test-artifacts', import.meta.url))

let demo, browser, server
/** Pages by name, each in its own browser context (its own device). */
const pages = {}
/** Uncaught errors of the pages' scripts: each test ends with none. */
const pageErrors = []
afterEach(() => assert.deepEqual(pageErrors.splice(0), []))

before(async () => {
  demo = await Demo.start()
  try {
    browser = await chromium.launch({
      executablePath,
      // This machine's network is closed: without these Chromium keeps dialing out.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync']
    })
  } catch (error) {
    throw new Error(`cannot start Chromium at ${executablePath} (scripts/ensure-chromium installs it): ${error.message}`)
  }
  // The server side of the story: a plain client of the demo that pokes users.
  server = new WseClient({ url: demo.url, reconnect: { base: 100, max: 500 } })
  await server.connect('secret', { user_id: 'operator' })
  await mkdir(artifacts, { recursive: true })
})

after(async () => {
  server?.close()
  await browser?.close()
  await demo?.stop()
})

async function open (name, url, options = {}) {
  const context = await browser.newContext(options)
  const page = await context.newPage()
  page.setDefaultTimeout(PATIENCE)
  page.on('pageerror', (error) => pageErrors.push(`${name}: ${error.message}`))
  await page.goto(url)
  pages[name] = page
  return page
}

async function signIn (name, user, password = 'secret') {
  const page = await open(name, demo.page)
  await page.fill('#user', user)
  await page.fill('#password', password)
  await page.click('#sign-in button[type=submit]')
  return page
}

const ready = (page) => page.waitForSelector('#status[data-status="ready"]')
const seen = (page, selector, text) => page.locator(selector, { hasText: text }).first().waitFor()

test("the README's ten-line page imports the client from the demo and calls add", async () => {
  const hello = await readFile(new URL('../../examples/hello.html', import.meta.url), 'utf8')
  const readme = await readFile(new URL('../../../../README.md', import.meta.url), 'utf8')
  assert.ok(readme.includes(hello.trim()), 'README.md shows clients/js/examples/hello.html as it is')
  // Opened as a file, as a reader would: Chromium lets a file:// page load from loopback.
  const file = join(await mkdtemp(join(tmpdir(), 'wse-hello-')), 'hello.html')
  await writeFile(file, hello.replaceAll('127.0.0.1:4200', new URL(demo.page).host))
  const page = await open('hello', pathToFileURL(file).href)
  await seen(page, '#out', '1 + 2 = 3')
  await page.context().close()
})

test('a refused sign-in shows the typed error and stays offline', async () => {
  const page = await signIn('refused', 'mallory', 'not-the-password')
  await seen(page, '#sign-in-error', 'wse.not-authorized')
  assert.equal(await page.getAttribute('#status', 'data-status'), 'offline')
  assert.equal(await page.isHidden('#app'), true)
})

test('on the HMAC challenge port, the page answers the challenge with its secret', async () => {
  const page = await open('challenged', `http://${new URL(demo.hmacUrl).host}/`)
  await page.fill('#user', 'carol')
  await page.click('#sign-in button[type=submit]')
  await ready(page)
  await page.click('#sign-out')
  await page.waitForSelector('#sign-in:not([hidden])')
  await page.fill('#secret', 'wrong')
  await page.fill('#user', 'carol')
  await page.click('#sign-in button[type=submit]')
  await seen(page, '#sign-in-error', 'wse.not-authorized')
  await page.context().close()
})

test('one user on two browser contexts: presence counts both, a message to the user reaches both', async () => {
  const laptop = await signIn('annLaptop', 'ann')
  await ready(laptop)
  // The page's own link opens a second device of the same user.
  const second = await laptop.getAttribute('#second-device', 'href')
  const phone = await open('annPhone', second)
  await ready(phone)
  for (const page of [laptop, phone]) await seen(page, '#online li[data-user="ann"]', '2 devices')

  await server.call('send_to_user', { user: 'ann', type: 'note', payload: 'to every device' })
  for (const page of [laptop, phone]) await seen(page, '#inbox li', 'note "to every device"')
})

test('a room chat and presence updates between two users', async () => {
  const ann = pages.annLaptop
  const bob = await signIn('bob', 'bob')
  await ready(bob)
  await seen(ann, '#online li[data-user="bob"]', '1 device')
  for (const page of [ann, bob]) {
    await page.click('#join button')
    await seen(page, '#chat li', 'you joined public-lobby')
  }
  await ann.fill('#line', 'hello room')
  await ann.press('#line', 'Enter')
  for (const page of [ann, bob]) await seen(page, '#chat li', 'ann: hello room')

  await bob.fill('#room', 'secret-club')
  await bob.click('#join button')
  await seen(bob, '#chat li', 'wse.server.room.forbidden')
})

test('a private message, add, and a typed error', async () => {
  const ann = pages.annLaptop
  const bob = pages.bob
  await ann.fill('#dm-to', 'bob')
  await ann.fill('#dm-text', 'psst')
  await ann.click('#dm button')
  await seen(ann, '#dm-result', 'delivered to bob')
  await seen(bob, '#dms li', 'from ann: psst')

  await ann.fill('#a', '19')
  await ann.fill('#b', '23')
  await ann.click('#add button')
  await seen(ann, '#sum', '= 42')
  await ann.click('#fail')
  await seen(ann, '#error', 'app.custom-failure')
})

test('a server → client call answered by the page', async () => {
  assert.equal(await server.call('ask_user', { user: 'bob', a: 2, b: 40 }), 42)
  await seen(pages.bob, '#inbox li', 'the server called client_sum(2, 40)')
})

test('screenshots of the demo page, wide and on a phone', async () => {
  await pages.annLaptop.setViewportSize({ width: 1280, height: 900 })
  await pages.annLaptop.screenshot({ path: `${artifacts}/demo-page.png`, fullPage: true })

  const phone = await open('phone', `${demo.page}?user=dana`, {
    viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2
  })
  await ready(phone)
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  assert.ok(overflow <= 0, `the page scrolls sideways on a phone by ${overflow}px`)
  await phone.screenshot({ path: `${artifacts}/demo-page-phone.png`, fullPage: true })
  await phone.context().close()
})

test('the pages reconnect after the server restarts, back in their room', async () => {
  const ann = pages.annLaptop
  const bob = pages.bob
  const reconnecting = [ann, bob].map((page) => page.waitForSelector('#status[data-status="reconnecting"]'))
  await demo.restart()
  await Promise.all(reconnecting)
  await Promise.all([ann, bob].map(ready))

  await bob.fill('#line', 'still here')
  await bob.press('#line', 'Enter')
  await seen(ann, '#chat li', 'bob: still here')

  await bob.click('#sign-out')
  await bob.waitForSelector('#sign-in:not([hidden])')
  await ann.locator('#online li[data-user="bob"]').waitFor({ state: 'detached' })
})
