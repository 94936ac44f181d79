import t from 'tap'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { chromium, type Page } from 'playwright-core'
import { buildExample, type Example } from '../example/server.js'
import { waitFor, within } from './helpers/wait.js'

// End to end in Debian's Chromium: the example page signs in, shows an order
// created over HTTP, survives a server restart on the same port, and shows the
// next order. Leaves a screenshot in test/artifacts/ for a person to look at.

const CHROMIUM = '/usr/bin/chromium'
const SECRET = 'e2e-test-secret-at-least-32-characters!'
const screenshot = new URL('./artifacts/e2e-browser.png', import.meta.url)

if (!existsSync(CHROMIUM)) {
  const reason = `${CHROMIUM} is missing (apt-get install -y chromium); .ci/run installs it`
  if (process.env.CI === 'true') {
    t.fail(`browser end-to-end test cannot run: ${reason}`)
  } else {
    process.stderr.write(`\n!!!!!!!!\n!!! SKIPPING the browser end-to-end test: ${reason}\n!!!!!!!!\n\n`)
    t.test('browser end to end', { skip: reason }, async () => {})
  }
} else {
  t.test('the example page shows orders live, across a server restart', async (t) => {
    const examples: Example[] = []
    const start = async (port = 0): Promise<Example> => {
      const example = await buildExample({ port, healthPort: 0, jwtSecret: SECRET })
      examples.push(example)
      return example
    }
    t.teardown(async () => { await Promise.allSettled(examples.map((example) => example.close())) })

    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
        '--no-first-run', '--disable-component-update', '--disable-sync']
    })
    t.teardown(() => browser.close())
    const page = await browser.newPage()
    const pageErrors: string[] = []
    page.on('pageerror', (error) => { pageErrors.push(error.message) })

    const first = await start()
    await page.goto(`${first.url}/`)
    await page.fill('#name', 'alice')
    await page.selectOption('#format', 'msgpack')
    await page.click('#sign-in button[type="submit"]')
    await page.locator('#state[data-state="open"]').waitFor({ timeout: 10_000 })
    t.ok(await page.locator('#sign-in').isHidden(), 'the sign-in form made way for the feed')
    await waitFor(() => first.app.eventSocket.stats().subscriptions === 2, { what: 'the page to subscribe' })

    const before = await createOrder(first)
    await feedShows(page, before)
    t.pass('an order created over HTTP appears in the feed')

    // Bounded: the sockets get 1001 and 2 s to answer it; what still holds the
    // close after that (a keep-alive connection, a handle) is named in the failure.
    await within(first.close(), { what: 'the first example server to close' }).catch((error: Error) => {
      throw new Error(`${error.message}; open: ${process.getActiveResourcesInfo().join(', ')}`)
    })
    await page.locator('#state[data-state="reconnecting"]').waitFor({ timeout: 10_000 })
    const second = await start(first.port)
    await page.locator('#state[data-state="open"]').waitFor({ timeout: 20_000 })
    await waitFor(() => second.app.eventSocket.stats().subscriptions === 2, { what: 'the page to resubscribe' })

    const after = await createOrder(second)
    await feedShows(page, after)
    t.pass('after the restart the page reconnected and shows the next order')

    const orders = page.locator('#feed li', { hasText: 'orders.created' })
    await page.click('#create-order')
    await waitFor(async () => await orders.count() === 3, { what: 'the order made by the page\'s button', intervalMs: 20 })
    t.pass('the page\'s own button creates an order that shows up')

    await page.click('#notify-me')
    await page.locator('#feed li', { hasText: 'Hello from the server!' }).waitFor({ timeout: 10_000 })
    t.pass('the private notification arrives too')

    await mkdir(new URL('.', screenshot), { recursive: true })
    await page.screenshot({ path: screenshot.pathname, fullPage: true })
    t.same(pageErrors, [], 'no uncaught errors in the page')
  })
}

async function createOrder (example: Example): Promise<string> {
  const response = await fetch(`${example.url}/orders`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ item: 'espresso', quantity: 2 })
  })
  if (response.status !== 201) throw new Error(`POST /orders answered ${response.status}`)
  return ((await response.json()) as { id: string }).id
}

async function feedShows (page: Page, orderId: string): Promise<void> {
  await page.locator('#feed li', { hasText: orderId }).waitFor({ timeout: 10_000 })
}
