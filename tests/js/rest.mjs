// /rest/v1 through supabase-js 2.119.0 (driven by tests/stack/test_rest_js.py).
//
// Env: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY, REST_PREFIX (test objects),
// REST_USER_TOKEN and REST_USER_GENERATION (a signed-in user and their generation).
// Prints one JSON document {checks: [{name, ok, detail}]}; exits 1 at the first failed check.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = process.env
const opts = { realtime: { transport: ws }, auth: { persistSession: false, autoRefreshToken: false } }
const svc = createClient(env.SUPABASE_URL, env.SUPABASE_SERVICE_ROLE_KEY, opts)
const anon = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, opts)
const user = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, {
  ...opts,
  global: { headers: { Authorization: `Bearer ${env.REST_USER_TOKEN}` } },
})
const p = env.REST_PREFIX
const items = `${p}_items`
const children = `${p}_children`
const profiles = `${p}_profiles`
const checks = []

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b)
}

function finish(code) {
  console.log(JSON.stringify({ checks }))
  process.exit(code)
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

const expect = (ok, detail) => ({ ok, detail })
const ids = (rows) => (rows ?? []).map((r) => r.id)
const isPgError = (e) =>
  e && typeof e.code === 'string' && 'details' in e && 'hint' in e && typeof e.message === 'string'

// -- RPC ---------------------------------------------------------------------------------------
await check('rpc scalar', async () => {
  const { data, error } = await svc.rpc(`${p}_add`, { a: 40 })
  return expect(data === 42 && error === null, { data, error })
})
await check('rpc get', async () => {
  const { data } = await svc.rpc(`${p}_add`, { a: 1, b: 2 }, { get: true })
  return expect(data === 3, data)
})
await check('rpc typed args', async () => {
  const { data } = await svc.rpc(`${p}_echo`, {
    j: { a: [1] }, arr: [2, 1], ts: '2026-01-01T00:00:00Z', u: null, flag: true,
  })
  return expect(same(data.arr, [2, 1]) && same(data.j, { a: [1] }) &&
    data.ts === '2026-01-01T00:00:00+00:00' && data.flag === true, data)
})
await check('rpc setof with filters', async () => {
  const { data, count } = await svc.rpc(`${p}_upto`, { n: 5 }, { count: 'exact' })
    .select('id,name').gt('id', 1).order('id', { ascending: false }).limit(2)
  return expect(same(ids(data), [5, 4]) && count === 4, { data, count })
})
await check('rpc void', async () => {
  const { data, error, status } = await svc.rpc(`${p}_touch`, { v: 'js' })
  const touched = await svc.from(items).select('note').eq('id', 1).single()
  await svc.from(items).update({ note: null }).eq('id', 1)
  return expect(data === null && error === null && status === 204 && touched.data.note === 'js',
    { data, error, status, touched })
})
await check('rpc single and composite', async () => {
  const one = await svc.rpc(`${p}_upto`, { n: 1 }).single()
  const comp = await svc.rpc(`${p}_one`, { item: 2 })
  return expect(one.data.id === 1 && comp.data.name === 'beta' && !Array.isArray(comp.data),
    { one: one.data, comp: comp.data })
})
await check('rpc not found', async () => {
  const { error, status } = await svc.rpc(`${p}_nope`, { a: 1 })
  return expect(status === 404 && error.code === 'PGRST202' && isPgError(error), error)
})
await check('queue rpcs are service_role only', async () => {
  const a = await anon.rpc('enqueue_job', { p_job_type: 'cleanup-storage', p_payload: {} })
  const u = await user.rpc('claim_next_job', {})
  const s = await svc.rpc('enqueue_job', { p_job_type: 'cleanup-storage', p_payload: { js: true } })
  return expect(a.status === 401 && a.error.code === '42501' && u.status === 403 &&
    u.error.code === '42501' && typeof s.data === 'string', { a, u, s: s.data })
})

// -- reads -----------------------------------------------------------------------------------------
await check('select with embedding', async () => {
  const { data } = await svc.from(items)
    .select(`id, kids:${children}(label), ${profiles}(bio)`)
    .in('id', [1, 2]).order('id').order('rank', { referencedTable: 'kids' })
  const want = [
    { id: 1, kids: [{ label: 'x2' }, { label: 'x1' }], [profiles]: { bio: 'bio1' } },
    { id: 2, kids: [{ label: 'y1' }], [profiles]: null },
  ]
  return expect(same(data, want), data)
})
await check('filters', async () => {
  const q = () => svc.from(items).select('id').lt('id', 100).order('id')
  const results = {
    in: ids((await q().in('name', ['alpha', 'a b', 'delta "quoted"'])).data),
    inComma: ids((await q().in('note', ['has,comma', 'par(en)'])).data),
    like: ids((await q().like('name', 'a%')).data),
    ilike: ids((await q().ilike('name', '%RAY')).data),
    isNull: ids((await q().is('note', null)).data),
    not: ids((await q().not('flag', 'is', null)).data),
    or: ids((await q().or('score.gt.4,name.eq.alpha')).data),
    contains: ids((await q().contains('tags', ['b'])).data),
    json: ids((await q().eq('meta->>k', '4')).data),
  }
  const want = {
    in: [1, 4, 5], inComma: [3, 4], like: [1, 5], ilike: [3], isNull: [1],
    not: [1, 2, 4, 5], or: [1, 4, 5], contains: [1, 2], json: [4],
  }
  return expect(same(results, want), results)
})
await check('count, range and head', async () => {
  const page = await svc.from(items).select('id', { count: 'exact' }).lt('id', 100).order('id')
    .range(1, 2)
  const head = await svc.from(items).select('*', { count: 'exact', head: true }).lt('id', 100)
  return expect(same(ids(page.data), [2, 3]) && page.count === 5 && page.status === 206 &&
    head.count === 5 && head.data === null, { page, head })
})
await check('single and maybeSingle', async () => {
  const one = await svc.from(items).select('name').eq('id', 2).single()
  const many = await svc.from(items).select('id').lt('id', 100).single()
  const none = await svc.from(items).select('id').eq('id', 99).maybeSingle()
  const body = many.error
  return expect(one.data.name === 'beta' && many.status === 406 && body.code === 'PGRST116' &&
    body.details === 'The result contains 5 rows' && none.data === null && none.error === null,
  { one, many, none })
})

// -- writes ----------------------------------------------------------------------------------------
await check('insert without select is minimal', async () => {
  const { data, error, status } = await svc.from(items).insert({ id: 200, name: 'js' })
  return expect(status === 201 && data === null && error === null, { data, error, status })
})
await check('bulk insert with select', async () => {
  const { data } = await svc.from(items)
    .insert([{ id: 201, name: 'b1', qty: 1 }, { id: 202, name: 'b2' }]).select('id,qty')
  return expect(same(data, [{ id: 201, qty: 1 }, { id: 202, qty: null }]), data)
})
await check('upsert', async () => {
  const { data } = await svc.from(items).upsert({ id: 200, name: 'merged' }).select()
  const ignored = await svc.from(items).upsert({ id: 200, name: 'no' }, { ignoreDuplicates: true })
    .select()
  return expect(data[0].name === 'merged' && same(ignored.data, []), { data, ignored })
})
await check('update and delete', async () => {
  const upd = await svc.from(items).update({ note: 'js' }).gte('id', 200).select('id')
    .order('id')
  const cnt = await svc.from(items).update({ qty: 9 }, { count: 'exact' }).gte('id', 200)
  const del = await svc.from(items).delete().gte('id', 200).select('id').order('id')
  return expect(same(ids(upd.data), [200, 201, 202]) && cnt.count === 3 && cnt.status === 204 &&
    same(ids(del.data), [200, 201, 202]), { upd, cnt, del })
})

// -- errors and security -----------------------------------------------------------------------
await check('error bodies', async () => {
  const table = await svc.from(`${p}_missing`).select()
  const dup = await svc.from(items).insert({ id: 1, name: 'dup' })
  const col = await svc.from(items).select('nope')
  const schema = await svc.schema('storage').from('objects').select()
  const ok = table.status === 404 && table.error.code === 'PGRST205' && dup.status === 409 &&
    dup.error.code === '23505' && col.status === 400 && col.error.code === '42703' &&
    schema.status === 406 && schema.error.code === 'PGRST106' &&
    [table, dup, col, schema].every((r) => isPgError(r.error))
  return expect(ok, { table: table.error, dup: dup.error, col: col.error, schema: schema.error })
})
await check('rls for a signed-in user', async () => {
  const gens = await user.from('image_generations').select('id, images(id)')
  const anonGens = await anon.from('image_generations').select('id')
  const models = await anon.from('models').select('id').limit(1)
  return expect(same(ids(gens.data), [env.REST_USER_GENERATION]) && anonGens.status === 401 &&
    anonGens.error.code === '42501' && models.data.length === 1, { gens, anonGens })
})

finish(0)
