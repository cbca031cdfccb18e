// The Picture app's generation flow in supabase-js, as the app writes it (the seed README's
// client contract), run against the local stack and the worker daemon.
// Driven by tests/e2e/test_seed_client_js.py; also runnable by hand against any project:
//
//   SUPABASE_URL=... SUPABASE_ANON_KEY=... node tests/js/seed_client.mjs
//
// Flow: sign up a user (email + password), invoke `start-generation`, subscribe to Realtime
// UPDATEs of that generation (filtered by id), poll `select('*, images(*)')` in parallel, and
// once completed fetch the image from the public URL Storage gives and check its bytes.
//
// Output: one JSON document on stdout ({ok: true, ...observations}); on a failure or a timeout
// {ok: false, error, ...what was observed} and exit code 1. Progress lines go to stderr as
// JSON ({"event": "subscribed", ...} once the Realtime subscription is live).
//
// Environment: SUPABASE_URL, SUPABASE_ANON_KEY (required); SEED_TIMEOUT_MS (default 60000);
// SEED_PROMPT, SEED_MODEL_ID (defaults: the seed README's example request).
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'
import { createHash } from 'node:crypto'

const env = process.env
const TIMEOUT_MS = Number(env.SEED_TIMEOUT_MS || 60000)
const POLL_MS = 500
const started = Date.now()
const elapsed = () => (Date.now() - started) / 1000

const observed = {
  user_id: null,
  generation_id: null,
  invoke: null,
  subscribe_states: [],
  realtime_statuses: [], // payload.new.status of every UPDATE, in delivery order
  poll_statuses: [], // every status the poller read, consecutive repeats collapsed
  row: null,
  public_url: null,
  image: null,
  timings: {},
}

let finished = false
function finish(ok, error) {
  if (finished) return
  finished = true
  const doc = { ok, ...(error ? { error } : {}), elapsed: elapsed(), ...observed }
  process.stdout.write(JSON.stringify(doc) + '\n', () => process.exit(ok ? 0 : 1))
  if (!ok) process.stderr.write(`seed_client: ${error}\n`)
}

function progress(event, extra = {}) {
  process.stderr.write(JSON.stringify({ event, t: elapsed(), ...extra }) + '\n')
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const timer = setTimeout(() => {
  const seen = `Realtime: [${observed.realtime_statuses}], polling: [${observed.poll_statuses}]`
  finish(false, `timed out after ${TIMEOUT_MS} ms (statuses seen: ${seen})`)
}, TIMEOUT_MS)

if (!env.SUPABASE_URL || !env.SUPABASE_ANON_KEY) {
  process.stderr.write('seed_client: SUPABASE_URL and SUPABASE_ANON_KEY must be set\n')
  process.exit(2)
}

// The app's client. The only deviation from the app's code: Node 20 has no global WebSocket,
// so Realtime is given the `ws` package as its transport (the workaround supabase-js documents
// for Node < 22). Everything else is the default client configuration.
const supabase = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, {
  realtime: { transport: ws },
})

async function functionError(error) {
  // FunctionsHttpError keeps the Response in `context`: the function's {"error": "..."} body.
  try {
    const body = await error.context.json()
    return `${error.name}: ${body.error ?? JSON.stringify(body)} (HTTP ${error.context.status})`
  } catch {
    return `${error.name}: ${error.message}`
  }
}

async function signUp() {
  const email = `seed-js-${Math.random().toString(16).slice(2, 12)}@example.test`
  const password = 'correct-horse-battery-42'
  const { data, error } = await supabase.auth.signUp({ email, password })
  if (error) throw new Error(`signUp failed: ${error.message}`)
  if (!data.session) {
    // Projects that require e-mail confirmation answer sign-up without a session.
    const signIn = await supabase.auth.signInWithPassword({ email, password })
    if (signIn.error) throw new Error(`signInWithPassword failed: ${signIn.error.message}`)
  }
  observed.user_id = data.user.id
}

async function startGeneration() {
  const t0 = Date.now()
  const { data, error } = await supabase.functions.invoke('start-generation', {
    body: {
      prompt: env.SEED_PROMPT || 'a lighthouse at dawn, seed client',
      model_id: env.SEED_MODEL_ID || 'black-forest-labs/flux-schnell',
      width: 1024,
      height: 1024,
    },
  })
  observed.timings.invoke_ms = Date.now() - t0
  if (error) throw new Error(`start-generation failed: ${await functionError(error)}`)
  observed.invoke = data
  if (!data?.success || !data.generation_id) {
    throw new Error(`start-generation answered without a generation_id: ${JSON.stringify(data)}`)
  }
  return data.generation_id
}

function subscribe(id) {
  return new Promise((resolve, reject) => {
    const channel = supabase
      .channel(`generation-${id}`)
      .on(
        'postgres_changes',
        { event: 'UPDATE', schema: 'public', table: 'image_generations', filter: 'id=eq.' + id },
        (payload) => {
          observed.realtime_statuses.push(payload.new.status)
        },
      )
      .subscribe((status, err) => {
        observed.subscribe_states.push(err ? `${status}: ${err.message}` : status)
        if (status === 'SUBSCRIBED') {
          observed.timings.subscribed_s = elapsed()
          progress('subscribed', { generation_id: id })
          resolve(channel)
        } else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
          reject(new Error(`Realtime subscription ${status}${err ? `: ${err.message}` : ''}`))
        }
      })
  })
}

const TERMINAL_FAILURES = new Set(['failed', 'cancelled'])

async function poll(id) {
  for (;;) {
    const { data, error } = await supabase
      .from('image_generations')
      .select('*, images(*)')
      .eq('id', id)
      .single()
    if (error) throw new Error(`polling failed: ${error.message} (${error.code})`)
    observed.row = data
    if (observed.poll_statuses.at(-1) !== data.status) observed.poll_statuses.push(data.status)
    if (TERMINAL_FAILURES.has(data.status)) {
      throw new Error(`generation ended ${data.status}: ${data.error_message ?? '(no message)'}`)
    }
    const realtimeFailure = observed.realtime_statuses.find((s) => TERMINAL_FAILURES.has(s))
    if (realtimeFailure) throw new Error(`Realtime reported the generation ${realtimeFailure}`)
    // Done when the row is completed with its image AND Realtime delivered the completion.
    if (data.status === 'completed' && data.images?.length) {
      observed.timings.completed_s ??= elapsed()
      if (observed.realtime_statuses.includes('completed')) return data
    }
    await sleep(POLL_MS)
  }
}

function u32be(b, at) {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0
}

function u24le(b, at) {
  return b[at] | (b[at + 1] << 8) | (b[at + 2] << 16)
}

// The image format from its magic bytes, and its size from the header when it is readable.
function decodeHeader(b) {
  const ascii = (from, to) => String.fromCharCode(...b.subarray(from, to))
  if (b.length >= 30 && ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') {
    const riffSize = b[4] | (b[5] << 8) | (b[6] << 16) | (b[7] << 24)
    if (riffSize + 8 !== b.length) throw new Error(`truncated WebP: RIFF says ${riffSize + 8} bytes, got ${b.length}`)
    const chunk = ascii(12, 16)
    if (chunk === 'VP8X') return { format: 'webp', width: 1 + u24le(b, 24), height: 1 + u24le(b, 27) }
    if (chunk === 'VP8 ') {
      if (b[23] !== 0x9d || b[24] !== 0x01 || b[25] !== 0x2a) throw new Error('WebP VP8 start code missing')
      return { format: 'webp', width: (b[26] | (b[27] << 8)) & 0x3fff, height: (b[28] | (b[29] << 8)) & 0x3fff }
    }
    if (chunk === 'VP8L') {
      if (b[20] !== 0x2f) throw new Error('WebP VP8L signature missing')
      const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24)
      return { format: 'webp', width: (bits & 0x3fff) + 1, height: ((bits >>> 14) & 0x3fff) + 1 }
    }
    throw new Error(`unknown WebP chunk ${JSON.stringify(chunk)}`)
  }
  const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]
  if (b.length >= 24 && PNG.every((v, i) => b[i] === v)) {
    if (ascii(12, 16) !== 'IHDR') throw new Error('PNG without IHDR')
    return { format: 'png', width: u32be(b, 16), height: u32be(b, 20) }
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) {
    if (b.at(-2) !== 0xff || b.at(-1) !== 0xd9) throw new Error('JPEG without an end-of-image marker')
    for (let at = 2; at + 9 < b.length; ) {
      if (b[at] !== 0xff) break
      const marker = b[at + 1]
      const length = (b[at + 2] << 8) | b[at + 3]
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return { format: 'jpeg', width: (b[at + 7] << 8) | b[at + 8], height: (b[at + 5] << 8) | b[at + 6] }
      }
      at += 2 + length
    }
    return { format: 'jpeg', width: null, height: null }
  }
  throw new Error(`not a webp/png/jpeg image (first bytes ${Buffer.from(b.subarray(0, 12)).toString('hex')})`)
}

async function fetchImage(row) {
  const image = row.images[0]
  const publicUrl = supabase.storage.from('generated-images').getPublicUrl(image.storage_path).data.publicUrl
  observed.public_url = publicUrl
  const response = await fetch(publicUrl)
  if (!response.ok) throw new Error(`GET ${publicUrl} answered ${response.status}`)
  const bytes = new Uint8Array(await response.arrayBuffer())
  const header = decodeHeader(bytes)
  observed.image = {
    bytes: bytes.length,
    content_type: response.headers.get('content-type'),
    sha256: createHash('sha256').update(bytes).digest('hex'),
    ...header,
  }
  if (header.width === 0 || header.height === 0) throw new Error('image has a zero dimension')
}

async function main() {
  await signUp()
  const id = await startGeneration()
  observed.generation_id = id
  progress('started', { generation_id: id, status: observed.invoke.status })
  const channel = await subscribe(id)
  const row = await poll(id)
  await fetchImage(row)
  await supabase.removeChannel(channel)
  clearTimeout(timer)
  finish(true)
}

main().catch((err) => finish(false, err?.message ?? String(err)))
