// supabase-js against the local stack's Realtime, driven by tests/stack/test_realtime_js.py
// and tests/stack/test_realtime_restart.py.
//
// Subscribes the channels the Picture app and the worker use, prints one JSON line per
// subscribe status, per system message (the server's "Subscribed to PostgreSQL" comes after
// SUBSCRIBED, once changes flow) and per change on stdout, and exits on {"cmd":"quit"} (or
// EOF) on stdin.
//
// Environment:
//   SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY
//   USER_JWT     access token of a signed-in user (the Picture app's client)
//   GEN_ID       the image_generations row that user watches
//   SCENARIO     "all" (default): gen + jobs + deletes channels; "gen": only the gen channel
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'
import readline from 'node:readline'

const env = process.env
const scenario = env.SCENARIO || 'all'
const started = Date.now()

function emit(obj) {
  process.stdout.write(JSON.stringify({ t: (Date.now() - started) / 1000, ...obj }) + '\n')
}

const common = {
  auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  realtime: { transport: ws },
}

// The Picture app: a signed-in user watching their own generation by id.
const user = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, {
  ...common,
  accessToken: async () => env.USER_JWT,
})
// The worker side (service_role): job inserts and generation deletes.
const service = createClient(env.SUPABASE_URL, env.SUPABASE_SERVICE_ROLE_KEY, common)
// Like an app that subscribes once the user is signed in: the first join carries the token.
await user.realtime.setAuth(env.USER_JWT)

function watch(client, name, binding) {
  const channel = client
    .channel(name)
    .on('postgres_changes', binding, (payload) => {
      emit({
        kind: 'change',
        channel: name,
        eventType: payload.eventType,
        table: payload.table,
        commit_timestamp: payload.commit_timestamp,
        errors: payload.errors,
        new: payload.new,
        old: payload.old,
      })
    })
    .on('system', {}, (payload) => {
      emit({ kind: 'system', channel: name, status: payload.status, message: payload.message })
    })
    .subscribe((status, err) => {
      emit({ kind: 'status', channel: name, status, error: err ? String(err.message || err) : null })
    })
  return channel
}

const channels = [
  [user, watch(user, 'gen', {
    event: 'UPDATE', schema: 'public', table: 'image_generations', filter: `id=eq.${env.GEN_ID}`,
  })],
]
if (scenario === 'all') {
  channels.push([service, watch(service, 'jobs', { event: 'INSERT', schema: 'public', table: 'job_queue' })])
  channels.push([service, watch(service, 'deletes', { event: 'DELETE', schema: 'public', table: 'image_generations' })])
}

async function quit() {
  for (const [client, channel] of channels) {
    await client.removeChannel(channel).catch(() => {})
  }
  emit({ kind: 'bye' })
  process.exit(0)
}

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  let cmd = {}
  try { cmd = JSON.parse(line) } catch { return }
  if (cmd.cmd === 'quit') quit()
})
rl.on('close', () => quit())
emit({ kind: 'started', scenario })
