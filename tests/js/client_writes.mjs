// The existing clients' own writes (issue 11 point 8), sent exactly as the apps and the
// shared client library send them, through supabase-js 2.119.0, against the local stack.
// Driven by tests/e2e/test_client_writes_js.py.
//
// Phase 1 runs with no worker (the jobs stay pending): the legacy insert and error path, the
// web app's cancel, the shared library's cancelJob and its views. Then the script prints
// {"event": "need_worker"} on stderr and waits for a line on stdin (the driver starts the
// daemon). Phase 2: the legacy synchronous generate-image with models.version, its error
// path, and the mobile app's cancel of a running generation, watched through Realtime.
//
// Env: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY.
// Prints one JSON document {checks: [{name, ok, detail}], ids: {...}}; exits 1 on a failure.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'
import { createInterface } from 'node:readline'

const env = process.env
const FLUX = 'black-forest-labs/flux-schnell'
const SDXL = 'stability-ai/sdxl'
const opts = { realtime: { transport: ws }, auth: { persistSession: false, autoRefreshToken: false } }
const supabase = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, { realtime: { transport: ws } })
const service = createClient(env.SUPABASE_URL, env.SUPABASE_SERVICE_ROLE_KEY, opts)
const checks = []
const ids = {}
const realtime = {} // generation id -> statuses seen through Realtime, in order
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const expect = (ok, detail) => ({ ok, detail })
const recent = (iso) => Math.abs(Date.now() - Date.parse(iso)) < 60_000

function finish(code) {
  console.log(JSON.stringify({ checks, ids }))
  process.exit(code)
}

function progress(event, extra = {}) {
  process.stderr.write(JSON.stringify({ event, ...extra }) + '\n')
}

async function check(name, fn) {
  let ok = false
  let detail = null
  try {
    const result = await fn()
    ok = result.ok
    detail = result.detail ?? null
  } catch (err) {
    detail = `threw: ${err && err.stack ? err.stack : err}`
  }
  checks.push({ name, ok, detail })
  if (!ok) finish(1)
}

async function until(what, fn, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await fn()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(200)
  }
}

async function functionError(error) {
  try {
    const body = await error.context.json()
    return { status: error.context.status, message: body.error }
  } catch {
    return { status: null, message: error.message }
  }
}

function watch(id) {
  realtime[id] = []
  return new Promise((resolve, reject) => {
    const channel = supabase
      .channel(`generation-${id}`)
      .on('postgres_changes',
        { event: 'UPDATE', schema: 'public', table: 'image_generations', filter: 'id=eq.' + id },
        (payload) => realtime[id].push(payload.new.status))
      // As on hosted Realtime: the join's ok comes before the subscription exists; changes
      // flow once the server says "Subscribed to PostgreSQL" (or an error).
      .on('system', {}, (payload) => {
        if (payload.status === 'ok' && /Subscribed to PostgreSQL/.test(payload.message)) resolve(channel)
        else if (payload.status === 'error') reject(new Error(`Realtime: ${payload.message}`))
      })
      .subscribe((status, err) => {
        if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') {
          reject(new Error(`Realtime ${status}${err ? `: ${err.message}` : ''}`))
        }
      })
  })
}

// The legacy synchronous clients' own insert.
async function legacyInsert(userId, prompt, model = FLUX) {
  const { data, error } = await supabase
    .from('image_generations')
    .insert({
      user_id: userId, prompt, negative_prompt: 'blurry', model,
      width: 1024, height: 1024, steps: 4, guidance_scale: 0, status: 'pending',
    })
    .select()
    .single()
  if (error) throw new Error(`legacy insert: ${error.code} ${error.message}`)
  return data
}

async function startGeneration(prompt) {
  const { data, error } = await supabase.functions.invoke('start-generation', {
    body: { prompt, model_id: FLUX },
  })
  if (error) throw new Error(`start-generation: ${JSON.stringify(await functionError(error))}`)
  return data
}

async function row(id) {
  const { data, error } = await supabase.from('image_generations').select('*, images(*)')
    .eq('id', id).single()
  if (error) throw new Error(`read ${id}: ${error.message}`)
  return data
}

// -- phase 1: no worker --------------------------------------------------------------------------
const email = `writes-js-${Math.random().toString(16).slice(2, 12)}@example.test`
const signUp = await supabase.auth.signUp({ email, password: 'correct-horse-battery-42' })
if (signUp.error) throw new Error(`signUp: ${signUp.error.message}`)
const userId = signUp.data.user.id
ids.user_id = userId

await check('legacy insert of a pending row', async () => {
  const data = await legacyInsert(userId, 'legacy insert')
  ids.legacy_row = data.id
  return expect(data.status === 'pending' && data.user_id === userId &&
    data.replicate_prediction_id === null && recent(data.updated_at), data)
})

await check('legacy error path marks the row failed, with the server\'s clock', async () => {
  const { data, error } = await supabase.from('image_generations')
    .update({ status: 'failed', error_message: 'Generation failed: network error',
      completed_at: '2000-01-01T00:00:00.000Z' })
    .eq('id', ids.legacy_row)
    .select()
  const r = data?.[0]
  return expect(!error && r?.status === 'failed' && r.error_message === 'Generation failed: network error' &&
    recent(r.completed_at) && recent(r.updated_at), { data, error })
})

await check('web app cancel of a pending row', async () => {
  const created = await legacyInsert(userId, 'web cancel')
  const channel = await watch(created.id)
  const { data, error } = await supabase.from('image_generations')
    .update({ status: 'cancelled' })
    .eq('id', created.id)
    .eq('status', 'pending')
    .select()
  await until('Realtime cancelled', () => realtime[created.id].includes('cancelled'))
  await supabase.removeChannel(channel)
  return expect(!error && data?.length === 1 && data[0].status === 'cancelled' &&
    recent(data[0].completed_at), { data, error, realtime: realtime[created.id] })
})

await check('shared library cancelJob cancels the pending job and its generation', async () => {
  const started = await startGeneration('cancel my job')
  ids.cancel_job_generation = started.generation_id
  const channel = await watch(started.generation_id)
  const { data, error } = await supabase.from('job_queue')
    .update({ status: 'cancelled', updated_at: new Date().toISOString() })
    .eq('id', started.job_id)
    .eq('status', 'pending')
    .select()
  await until('Realtime cancelled', () => realtime[started.generation_id].includes('cancelled'))
  await supabase.removeChannel(channel)
  const gen = await row(started.generation_id)
  const job = data?.[0]
  return expect(!error && job?.status === 'cancelled' && recent(job.updated_at) &&
    job.attempts === job.attempt_number && gen.status === 'cancelled',
  { job, error, gen_status: gen.status })
})

await check('a forged column is refused with the database\'s code', async () => {
  const { error } = await supabase.from('image_generations')
    .insert({ user_id: userId, prompt: 'x', model: FLUX, replicate_prediction_id: 'not-mine' })
  const second = await supabase.from('image_generations')
    .update({ status: 'completed' }).eq('id', ids.cancel_job_generation ?? '').select()
  return expect(error?.code === '42501' && !second.error && second.data.length === 0,
    { error, second })
})

await check('views with their original columns, as the user', async () => {
  const health = await supabase.from('queue_health').select('*')
  const failed = await supabase.from('failed_jobs_recent').select('*')
  const stuck = await supabase.from('stuck_jobs').select('*')
  const jobs = await supabase.from('job_queue').select('id, attempts, attempt_number')
  const cols = ['job_type', 'status', 'count', 'oldest_job', 'newest_job',
    'avg_duration_seconds', 'avg_attempts']
  const ok = !health.error && !failed.error && !stuck.error && !jobs.error &&
    health.data.length > 0 && health.data.every((r) => cols.every((c) => c in r)) &&
    health.data.reduce((n, r) => n + r.count, 0) === jobs.data.length &&
    jobs.data.every((j) => j.attempts === j.attempt_number)
  return expect(ok, { health, failed: failed.error, stuck: stuck.error, jobs })
})

await check('views as the service role sum real counts', async () => {
  const health = await service.from('queue_health').select('*')
  const total = await service.from('job_queue').select('id', { count: 'exact', head: true })
  const sum = (health.data ?? []).reduce((n, r) => n + r.count, 0)
  return expect(!health.error && sum > 0 && sum === total.count, { sum, total: total.count })
})

// -- phase 2: the daemon runs ---------------------------------------------------------------------
progress('need_worker')
await new Promise((resolve) => createInterface({ input: process.stdin }).once('line', resolve))

await check('legacy generate-image with models.version runs the catalogue model', async () => {
  const { data: model, error: modelError } = await supabase.from('models').select('*')
    .eq('replicate_id', SDXL).single()
  if (modelError) throw new Error(modelError.message)
  const created = await legacyInsert(userId, 'a legacy sdxl picture', model.name)
  const { data, error } = await supabase.functions.invoke('generate-image', {
    body: { generation_id: created.id, prompt: created.prompt, model_id: SDXL,
      model_version: model.version, width: 1024, height: 1024 },
  })
  ids.legacy_generated = created.id
  return expect(!error && data?.success === true && data.image?.generation_id === created.id,
    { data, error: error && await functionError(error) })
})

await check('legacy error path after generate-image failed', async () => {
  const created = await legacyInsert(userId, '[nsfw] refused by the model')
  const { error } = await supabase.functions.invoke('generate-image', {
    body: { generation_id: created.id, prompt: created.prompt, model_id: FLUX },
  })
  const failure = error && await functionError(error)
  // The client marks its row failed; the worker already did, so no row changes and no error.
  const marked = await supabase.from('image_generations')
    .update({ status: 'failed', error_message: failure?.message, completed_at: new Date().toISOString() })
    .eq('id', created.id)
    .select()
  const gen = await row(created.id)
  return expect(failure?.status === 400 && !marked.error && gen.status === 'failed' && gen.images.length === 0,
    { failure, marked, gen_status: gen.status })
})

await check('mobile app cancel of a running generation', async () => {
  const started = await startGeneration('[slow:30] cancelled while it runs')
  ids.cancelled_running = started.generation_id
  const channel = await watch(started.generation_id)
  await until('processing with a prediction', async () => {
    const r = await row(started.generation_id)
    return r.status === 'processing' && r.replicate_prediction_id
  })
  const { data, error } = await supabase.from('image_generations')
    .update({ status: 'cancelled' })
    .eq('id', started.generation_id)
    .select()
  await until('Realtime cancelled', () => realtime[started.generation_id].includes('cancelled'))
  const job = await until('the job cancelled', async () => {
    const j = await supabase.from('job_queue').select('*').eq('id', started.job_id).single()
    return j.data?.status === 'cancelled' && j.data
  })
  await supabase.removeChannel(channel)
  return expect(!error && data?.[0]?.status === 'cancelled' && job.status === 'cancelled',
    { data, error, realtime: realtime[started.generation_id] })
})

finish(0)
