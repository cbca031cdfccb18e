// Edge-function calls through supabase-js, as an app makes them. Driven by tests/deno.
//
//   SUPABASE_URL=... SUPABASE_ANON_KEY=... node tests/js/invoke_functions.mjs < calls.json
//
// stdin: {"sign_up": true|false, "calls": [{"name", "body"?, "method"?, "headers"?,
// "raw_body"?}]}. With sign_up, a fresh user signs up first and the calls carry the
// session's token (supabase-js's default); without it they carry the anon key.
// stdout: one JSON document {ok, user_id, results: [{status, data, error_name, error_body}]}
// where a FunctionsHttpError's body is read from error.context, as an app would.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = process.env
const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.on('data', (chunk) => (text += chunk))
  process.stdin.on('end', () => resolve(text))
}))

// Node 20 has no global WebSocket: Realtime (unused here) gets the `ws` package, as in
// seed_client.mjs; everything else is the default client configuration.
const supabase = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: ws },
})

let userId = null
if (input.sign_up) {
  const email = `deno-js-${Math.random().toString(16).slice(2, 12)}@example.test`
  const { data, error } = await supabase.auth.signUp({ email, password: 'correct-horse-battery-42' })
  if (error || !data.session) {
    process.stdout.write(JSON.stringify({ ok: false, error: `sign-up failed: ${error?.message}` }) + '\n')
    process.exit(1)
  }
  userId = data.user.id
}

const results = []
for (const call of input.calls) {
  const options = { headers: call.headers ?? {} }
  if (call.method) options.method = call.method
  if (call.raw_body !== undefined) options.body = call.raw_body
  else if (call.body !== undefined) options.body = call.body
  const { data, error, response } = await supabase.functions.invoke(call.name, options)
  const result = { status: response?.status ?? null, data: data ?? null }
  if (error) {
    result.error_name = error.name
    try {
      result.error_body = await error.context.json()
    } catch {
      result.error_body = null
    }
  }
  result.cors = response?.headers?.get('access-control-allow-origin') ?? null
  results.push(result)
}
process.stdout.write(JSON.stringify({ ok: true, user_id: userId, results }) + '\n')
