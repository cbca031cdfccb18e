-- start-generation in one transaction: the per-user in-flight limit, the generation row and
-- its generate-image job. Called by functions_compat (service_role) through PostgREST:
--   rpc('create_generation', {p_user_id, p_generation, p_payload, p_max_in_flight})
-- Idempotent (create or replace); no secret, no data change.

create or replace function public.create_generation(
  p_user_id uuid,
  p_generation jsonb,
  p_payload jsonb,
  p_max_in_flight integer default 5
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_limit integer := coalesce(p_max_in_flight, 5);
  v_existing uuid;
  v_in_flight integer;
  v_gen public.image_generations;
  v_payload jsonb;
  v_job uuid;
begin
  if p_user_id is null then
    raise exception 'create_generation: p_user_id is required' using errcode = '22004';
  end if;
  if jsonb_typeof(p_generation) is distinct from 'object'
     or jsonb_typeof(coalesce(p_payload, '{}'::jsonb)) <> 'object' then
    raise exception 'create_generation: p_generation and p_payload must be JSON objects'
      using errcode = '22023';
  end if;
  if coalesce(btrim(p_generation ->> 'prompt'), '') = '' then
    raise exception 'create_generation: prompt is required' using errcode = '22023';
  end if;
  v_existing := nullif(p_generation ->> 'id', '')::uuid;

  -- One request per user at a time: two concurrent calls cannot both pass the limit check.
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('public.create_generation:' || p_user_id::text, 0));

  -- The legacy generate-image API: the client created a pending row and asks us to run it.
  if v_existing is not null then
    select * into v_gen from public.image_generations g where g.id = v_existing for update;
    if not found or v_gen.user_id is distinct from p_user_id then
      raise exception 'Generation % not found', v_existing using errcode = 'P0002';
    end if;
    if v_gen.status <> 'pending' then
      raise exception 'Generation % is already %', v_existing, v_gen.status
        using errcode = 'PT409';
    end if;
  end if;

  -- In flight: queued, processing, downloading, and pending rows touched within the hour
  -- (an older pending row is a legacy request whose client never started it; it must not
  -- lock its user out for good).
  select count(*) into v_in_flight
  from public.image_generations g
  where g.user_id = p_user_id
    and (g.status in ('queued', 'processing', 'downloading')
         or (g.status = 'pending' and g.updated_at > now() - interval '1 hour'))
    and g.id is distinct from v_existing;
  if v_limit > 0 and v_in_flight >= v_limit then
    raise exception 'Too many generations in progress (% of % allowed). Wait for one to finish and try again.',
      v_in_flight, v_limit
      using errcode = 'PT429',
            hint = 'FUNCTIONS_MAX_IN_FLIGHT sets the per-user limit.';
  end if;

  if v_existing is null then
    insert into public.image_generations
      (user_id, prompt, negative_prompt, model, style, width, height, steps, guidance_scale, status)
    values (
      p_user_id,
      p_generation ->> 'prompt',
      p_generation ->> 'negative_prompt',
      p_generation ->> 'model',
      p_generation ->> 'style',
      (p_generation ->> 'width')::integer,
      (p_generation ->> 'height')::integer,
      (p_generation ->> 'steps')::integer,
      (p_generation ->> 'guidance_scale')::numeric,
      'pending')  -- pending (row created) then queued (job enqueued), as the original did
    returning * into v_gen;
  else
    update public.image_generations g
    set prompt = p_generation ->> 'prompt',
        negative_prompt = coalesce(p_generation ->> 'negative_prompt', g.negative_prompt),
        model = coalesce(p_generation ->> 'model', g.model),
        style = coalesce(p_generation ->> 'style', g.style),
        width = coalesce((p_generation ->> 'width')::integer, g.width),
        height = coalesce((p_generation ->> 'height')::integer, g.height),
        steps = coalesce((p_generation ->> 'steps')::integer, g.steps),
        guidance_scale = coalesce((p_generation ->> 'guidance_scale')::numeric, g.guidance_scale),
        status = 'queued',
        error_message = null
    where g.id = v_existing
    returning * into v_gen;
  end if;

  v_payload := coalesce(p_payload, '{}'::jsonb)
    || jsonb_build_object('generation_id', v_gen.id, 'user_id', p_user_id);
  v_job := public.enqueue_job('generate-image', v_payload);

  update public.image_generations set job_id = v_job, status = 'queued' where id = v_gen.id;

  return jsonb_build_object('generation_id', v_gen.id, 'job_id', v_job);
end
$$;

revoke all on function public.create_generation(uuid, jsonb, jsonb, integer) from public, anon, authenticated;
grant execute on function public.create_generation(uuid, jsonb, jsonb, integer) to service_role;

comment on function public.create_generation(uuid, jsonb, jsonb, integer) is
  'start-generation in one transaction (service_role only): per-user in-flight limit (SQLSTATE PT429 -> HTTP 429), the image_generations row (queued; or an existing pending row of the user when p_generation has id), the generate-image job (payload + generation_id, user_id) and job_id on the row. Returns {generation_id, job_id}.';
