// supabase-js 2.119.0 with the new API keys (driven by tests/stack/test_api_keys.py).
//
// Env: SUPABASE_URL, SUPABASE_PUBLISHABLE_KEY, SUPABASE_SECRET_KEY.
// Prints one JSON document {checks: [{name, ok, detail}]}; exits 1 if a check failed.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = process.env
const opts = { realtime: { transport: ws }, auth: { persistSession: false, autoRefreshToken: false } }
const publishable = createClient(env.SUPABASE_URL, env.SUPABASE_PUBLISHABLE_KEY, opts)
const secret = createClient(env.SUPABASE_URL, env.SUPABASE_SECRET_KEY, opts)
const checks = []

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
}

await check('publishable reads the catalogue', async () => {
  const { data, error } = await publishable.from('models').select('id').limit(1)
  return { ok: !error && data.length === 1, detail: error }
})

await check('publishable cannot call a service-role RPC', async () => {
  const { error, status } = await publishable.rpc('next_scheduled_at')
  return { ok: status === 401 && error && error.code === '42501', detail: { status, error } }
})

await check('secret reads the queue as service_role', async () => {
  const { error, count } = await secret.from('job_queue').select('id', { count: 'exact', head: true })
  return { ok: !error && typeof count === 'number', detail: error }
})

await check('secret lists the buckets', async () => {
  const { data, error } = await secret.storage.listBuckets()
  return { ok: !error && data.some((b) => b.id === 'generated-images'), detail: error }
})

await check('secret sent as apikey only', async () => {
  const res = await fetch(`${env.SUPABASE_URL}/rest/v1/rpc/next_scheduled_at`, {
    method: 'POST',
    headers: { apikey: env.SUPABASE_SECRET_KEY, 'Content-Type': 'application/json' },
    body: '{}',
  })
  return { ok: res.status === 200 || res.status === 204, detail: res.status }
})

console.log(JSON.stringify({ checks }))
process.exit(checks.every((c) => c.ok) ? 0 : 1)
