// supabase-js against the local stack's /auth/v1 and /storage/v1.
//
// Env: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY.
// Prints one JSON line {ok, results} and exits 0; on the first failed check it prints
// {ok:false, failed, detail, results} and exits 1. Driven by tests/stack/test_auth_storage_js.py.
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const url = process.env.SUPABASE_URL
const anonKey = process.env.SUPABASE_ANON_KEY
const serviceKey = process.env.SUPABASE_SERVICE_ROLE_KEY
const results = {}

function finish(payload, code) {
  process.stdout.write(JSON.stringify(payload) + '\n')
  process.exit(code)
}

function check(name, condition, detail) {
  if (!condition) finish({ ok: false, failed: name, detail: detail ?? null, results }, 1)
  results[name] = detail ?? true
}

function client(key) {
  return createClient(url, key, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket }, // Node 20 has no global WebSocket
  })
}

function errorShape(error) {
  return error && { name: error.name, status: error.status, code: error.code, statusCode: error.statusCode, message: error.message }
}

const rand = Math.random().toString(16).slice(2, 10)
const email = `js-${rand}@example.test`
const password = 'correct-horse-1'
const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...Array.from({ length: 300 }, (_, i) => i % 256)])

async function auth() {
  const anon = client(anonKey)
  const up = await anon.auth.signUp({ email, password })
  check('signUp', !up.error && up.data.session && up.data.user?.email === email, errorShape(up.error))

  const user = client(anonKey)
  const signIn = await user.auth.signInWithPassword({ email, password })
  check('signInWithPassword', !signIn.error && signIn.data.session?.access_token && signIn.data.user?.id === up.data.user.id, errorShape(signIn.error))
  const first = signIn.data.session

  const me = await user.auth.getUser()
  check('getUser', !me.error && me.data.user.id === up.data.user.id, errorShape(me.error))

  const refreshed = await user.auth.refreshSession()
  check('refreshSession', !refreshed.error && refreshed.data.session.refresh_token !== first.refresh_token, errorShape(refreshed.error))

  const reuse = await anon.auth.refreshSession({ refresh_token: first.refresh_token })
  check('refresh reuse rejected', reuse.error?.code === 'refresh_token_already_used' && reuse.error.status === 400, errorShape(reuse.error))

  const wrong = await client(anonKey).auth.signInWithPassword({ email, password: 'nope-nope' })
  check('wrong password', wrong.error?.name === 'AuthApiError' && wrong.error.code === 'invalid_credentials' && wrong.error.status === 400, errorShape(wrong.error))

  const dup = await client(anonKey).auth.signUp({ email, password })
  check('duplicate signUp', dup.error?.code === 'user_already_exists' && dup.error.status === 422, errorShape(dup.error))

  const weak = await client(anonKey).auth.signUp({ email: `w-${email}`, password: '123' })
  check('weak password', weak.error?.name === 'AuthWeakPasswordError' && weak.error.reasons?.[0] === 'length', errorShape(weak.error))

  return { user, userId: up.data.user.id, lastToken: refreshed.data.session.access_token }
}

async function storage(user, userId) {
  const service = client(serviceKey)
  const bucket = `js-${rand}`
  const created = await service.storage.createBucket(bucket, { public: true })
  check('createBucket', !created.error && created.data.name === bucket, errorShape(created.error))
  const got = await service.storage.getBucket(bucket)
  check('getBucket', !got.error && got.data.public === true && got.data.file_size_limit === null, errorShape(got.error))
  const files = service.storage.from(bucket)

  const blob = await files.upload('dir/blob.png', new Blob([png], { type: 'image/png' }), { contentType: 'image/png' })
  check('upload Blob (multipart)', !blob.error && blob.data.fullPath === `${bucket}/dir/blob.png` && blob.data.id, errorShape(blob.error))

  const raw = await files.upload('dir/raw file.png', Buffer.from(png), { contentType: 'image/png', metadata: { gen: 7 } })
  check('upload Buffer (raw)', !raw.error && raw.data.fullPath === `${bucket}/dir/raw file.png`, errorShape(raw.error))

  const dl = await files.download('dir/raw file.png')
  const dlBytes = dl.data && new Uint8Array(await dl.data.arrayBuffer())
  check('download', !dl.error && dlBytes.length === png.length && dlBytes.every((b, i) => b === png[i]) && dl.data.type === 'image/png', errorShape(dl.error))

  const { data: { publicUrl } } = files.getPublicUrl('dir/blob.png')
  const res = await fetch(publicUrl)
  const pubBytes = new Uint8Array(await res.arrayBuffer())
  check('public URL fetch', res.status === 200 && res.headers.get('content-type') === 'image/png' && res.headers.get('cache-control') === 'max-age=3600' && pubBytes.length === png.length, { publicUrl, status: res.status })

  const info = await files.info('dir/raw file.png')
  check('info', !info.error && info.data.size === png.length && info.data.contentType === 'image/png' && info.data.metadata?.gen === 7, errorShape(info.error))

  const listed = await files.list('dir')
  const names = (listed.data ?? []).map((e) => e.name)
  check('list', !listed.error && JSON.stringify(names) === JSON.stringify(['blob.png', 'raw file.png']) && listed.data[0].metadata.size === png.length, names)
  const root = await files.list()
  check('list folders', !root.error && root.data.length === 1 && root.data[0].name === 'dir' && root.data[0].id === null, root.data)

  const exists = await files.exists('dir/blob.png')
  const missing = await files.exists('dir/none.png')
  check('exists', exists.data === true && missing.data === false, { exists: exists.data, missing: missing.data })

  const dupe = await files.upload('dir/blob.png', new Blob([png], { type: 'image/png' }))
  check('duplicate upload error', dupe.error?.name === 'StorageApiError' && dupe.error.statusCode === '409' && dupe.error.status === 400 && dupe.error.message === 'The resource already exists', errorShape(dupe.error))

  const notFound = await files.download('dir/none.png')
  check('download missing error', notFound.error?.statusCode === '404' && notFound.error.code === 'NoSuchKey', errorShape(notFound.error))

  const denied = await user.storage.from('generated-images').upload(`${userId}/x.png`, Buffer.from(png), { contentType: 'image/png' })
  check('RLS denies user upload', denied.error?.statusCode === '403' && denied.error.message === 'new row violates row-level security policy', errorShape(denied.error))

  const upserted = await files.upload('dir/blob.png', Buffer.from('v2'), { contentType: 'image/png', upsert: true })
  const v2 = await (await fetch(publicUrl)).text()
  check('upsert', !upserted.error && v2 === 'v2', errorShape(upserted.error))

  const removed = await files.remove(['dir/blob.png', 'dir/raw file.png'])
  check('remove', !removed.error && removed.data.length === 2, errorShape(removed.error))
  const after = await fetch(publicUrl)
  const afterBody = await after.json()
  check('removed object is gone', after.status === 400 && afterBody.statusCode === '404', afterBody)

  const deleted = await service.storage.deleteBucket(bucket)
  check('deleteBucket', !deleted.error, errorShape(deleted.error))
}

async function signOut(user, lastToken) {
  const out = await user.auth.signOut()
  check('signOut', !out.error, errorShape(out.error))
  const session = await user.auth.getSession()
  check('session cleared', session.data.session === null)
  const stale = await client(anonKey).auth.getUser(lastToken)
  check('revoked session rejected', stale.error?.name === 'AuthSessionMissingError', errorShape(stale.error))
}

try {
  const { user, userId, lastToken } = await auth()
  await storage(user, userId)
  await signOut(user, lastToken)
  finish({ ok: true, results }, 0)
} catch (err) {
  finish({ ok: false, failed: 'exception', detail: String(err?.stack ?? err), results }, 1)
}
