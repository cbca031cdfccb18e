// The original Deno start-generation (still deployed on hosted projects), reduced to its
// database calls, sent exactly as it sends them through supabase-js 2.119.0:
//
//   1. look up the model by replicate_id with the user's client;
//   2. insert the generation with the SERVICE-ROLE client: {user_id, prompt, negative_prompt,
//      model (the model's name), style, width, height, steps, guidance_scale, status: 'pending'};
//   3. rpc('enqueue_job', {p_job_type: 'generate-image', p_payload: {generation_id, user_id,
//      prompt, negative_prompt, model_id, model_version, width, height, num_inference_steps,
//      guidance_scale, seed, source_image_url, strength}, p_priority: 0, p_max_attempts: 3})
//      with the service-role client, model_version straight from the request;
//   4. update the generation to status 'queued'.
//
// Its own error mapping is not ours: for each request the script records the step that
// failed and the database's error. Driven by tests/security/test_deno_start_generation_js.py.
//
// Env: SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY, DENO_REQUESTS (a JSON list
// of {name, body}). Prints {user_id, results: [{name, step, error, generation_id, job_id}]}.
import { createClient } from '@supabase/supabase-js'
import ws from 'ws'

const env = process.env
// Node 20 has no global WebSocket: Realtime gets the ws package (unused here, but required).
const opts = { realtime: { transport: ws }, auth: { persistSession: false, autoRefreshToken: false } }
const anon = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, opts)
const service = createClient(env.SUPABASE_URL, env.SUPABASE_SERVICE_ROLE_KEY, opts)

const email = `deno-js-${Math.random().toString(16).slice(2, 12)}@example.test`
const signUp = await anon.auth.signUp({ email, password: 'correct-horse-battery-42' })
if (signUp.error) throw new Error(`signUp: ${signUp.error.message}`)
const token = signUp.data.session.access_token
// The function's user client: the caller's JWT on every request.
const userClient = createClient(env.SUPABASE_URL, env.SUPABASE_ANON_KEY, {
  ...opts, global: { headers: { Authorization: `Bearer ${token}` } },
})
const { data: { user } } = await userClient.auth.getUser(token)

const failure = (step, error) => ({ step, error: { code: error.code ?? null, message: error.message } })

async function startGeneration(body) {
  const { prompt, model_id, model_version, width, height, num_inference_steps, guidance_scale,
    seed, negative_prompt, source_image_url, strength, style } = body
  const { data: model, error: modelError } = await userClient
    .from('models').select('*').eq('replicate_id', model_id).single()
  if (modelError || !model) return failure('lookup', modelError ?? { message: 'no model' })

  const { data: generation, error: insertError } = await service
    .from('image_generations')
    .insert({
      user_id: user.id,
      prompt,
      negative_prompt,
      model: model.name,
      style,
      width: width || model.default_width || 1024,
      height: height || model.default_height || 1024,
      steps: num_inference_steps || model.default_steps || 30,
      guidance_scale: guidance_scale || model.default_guidance_scale || 7.5,
      status: 'pending',
    })
    .select()
    .single()
  if (insertError) return failure('insert', insertError)

  const { data: jobId, error: jobError } = await service.rpc('enqueue_job', {
    p_job_type: 'generate-image',
    p_payload: {
      generation_id: generation.id,
      user_id: user.id,
      prompt,
      negative_prompt,
      model_id,
      model_version,
      width: generation.width,
      height: generation.height,
      num_inference_steps: generation.steps,
      guidance_scale: generation.guidance_scale,
      seed,
      source_image_url,
      strength,
    },
    p_priority: 0,
    p_max_attempts: 3,
  })
  if (jobError) return { ...failure('enqueue', jobError), generation_id: generation.id }

  const { error: updateError } = await service
    .from('image_generations').update({ status: 'queued' }).eq('id', generation.id)
  if (updateError) return { ...failure('update', updateError), generation_id: generation.id, job_id: jobId }
  return { step: 'done', error: null, generation_id: generation.id, job_id: jobId }
}

const results = []
for (const { name, body } of JSON.parse(env.DENO_REQUESTS)) {
  results.push({ name, ...(await startGeneration(body)) })
}
console.log(JSON.stringify({ user_id: user.id, results }))
