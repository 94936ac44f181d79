// The example page: signs in through the demo token route, connects with the
// bundled client (served as plain ES modules from /client/), and shows every
// event it receives. No build step: browsers load this file as it is.
import { connect } from '/client/index.js'

const $ = (id) => document.getElementById(id)
const stateBadge = $('state')
const feed = $('feed')

async function fetchToken (user) {
  const response = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user })
  })
  if (!response.ok) throw new Error(`token route answered ${response.status}`)
  return (await response.json()).token
}

async function post (path, body) {
  const response = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
  if (!response.ok) throw new Error(`${path} answered ${response.status}`)
}

/** Adds one line on top of the feed; textContent only, so no event can inject markup. */
function show (topic, text, className) {
  const item = document.createElement('li')
  if (className) item.className = className
  const label = document.createElement('span')
  label.className = 'topic'
  label.textContent = topic
  item.append(label, text)
  feed.prepend(item)
}

function describe (event) {
  const data = event.data
  if (event.topic === 'orders.created') return `order ${data.id}: ${data.quantity} × ${data.item}`
  return data.message ?? JSON.stringify(data)
}

function setState (state) {
  stateBadge.dataset.state = state
  stateBadge.textContent = state
}

function start (user, format) {
  const url = new URL('/events', document.location.href)
  url.protocol = document.location.protocol === 'https:' ? 'wss:' : 'ws:'
  const client = connect({ url, format, getToken: () => fetchToken(user) })
  setState(client.state)
  client.on('state', setState)
  client.on('error', (error) => show(error.code, error.message, 'error'))
  // History is on: after a reconnect the server replays what this page missed, or says it cannot.
  client.on('resume', ({ pattern, recovered }) => {
    show('resumed', recovered ? `${pattern}: nothing missed` : `${pattern}: history lost, showing live events only`, recovered ? undefined : 'error')
  })

  const onEvent = (event) => show(event.topic, describe(event))
  for (const pattern of ['orders.*', `user.${user}.notifications`]) {
    client.subscribe(pattern, onEvent).ready.catch(() => {}) // refusals also arrive as 'error'
  }

  $('who').textContent = user
  $('own-topic').textContent = `user.${user}.notifications`
  $('sign-in').hidden = true
  $('controls').hidden = false
}

const items = ['coffee', 'tea', 'croissant', 'bagel', 'juice']

$('create-order').addEventListener('click', () => {
  const item = items[Math.floor(Math.random() * items.length)]
  post('/orders', { item, quantity: 1 + Math.floor(Math.random() * 3) })
    .catch((error) => show('http', error.message, 'error'))
})

$('notify-me').addEventListener('click', () => {
  post(`/users/${encodeURIComponent($('who').textContent)}/notify`, { message: 'Hello from the server!' })
    .catch((error) => show('http', error.message, 'error'))
})

$('sign-in').addEventListener('submit', (submit) => {
  submit.preventDefault()
  start($('name').value.trim(), $('format').value)
})
