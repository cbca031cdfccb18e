-- The RPCs that create, cancel and reopen generations, on top of the rules of
-- 20261201000300 (which every door meets). Idempotent: functions replaced (same
-- signatures as before), grants re-applied.
--
-- request_generation(p_request jsonb): start-generation for a signed-in user, callable
-- with the user's own JWT (the hosted Deno edge function and functions_compat use it).

-- Reading a start-generation body -----------------------------------------------------------------
create or replace function public.request_text(
  p_request jsonb,
  p_key text,
  p_max_chars integer,
  p_multiline boolean default false
) returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_value jsonb := p_request -> p_key;
  v_text text;
begin
  if v_value is null or jsonb_typeof(v_value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(v_value) <> 'string' then
    raise exception '% must be a string', p_key using errcode = '22023';
  end if;
  v_text := btrim(v_value #>> '{}', E' \t\n\r\f\x0b');
  if v_text ~ (case when p_multiline then '[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' else '[\x01-\x1f\x7f]' end) then
    raise exception '% must not contain control characters', p_key using errcode = '22023';
  end if;
  if char_length(v_text) > p_max_chars then
    raise exception '% is too long (% characters, at most %)', p_key, char_length(v_text), p_max_chars
      using errcode = '22023';
  end if;
  return nullif(v_text, '');
end
$$;

create or replace function public.request_number(
  p_request jsonb,
  p_key text,
  p_min numeric,
  p_max numeric,
  p_whole boolean default false
) returns numeric
language plpgsql
immutable
set search_path = ''
as $$
declare
  v_value jsonb := p_request -> p_key;
  v_text text;
  v_number numeric;
begin
  if v_value is null or jsonb_typeof(v_value) = 'null' then
    return null;
  end if;
  -- Numeric strings are accepted, as the original passed the body to PostgREST, which casts
  -- them into the integer and numeric columns.
  if jsonb_typeof(v_value) = 'number' then
    v_number := (v_value #>> '{}')::numeric;
  elsif jsonb_typeof(v_value) = 'string' then
    v_text := btrim(v_value #>> '{}');
    if v_text = '' then
      return null;
    end if;
    if char_length(v_text) > 40
       or v_text !~ '^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$' then
      raise exception '% must be a number', p_key using errcode = '22023';
    end if;
    v_number := v_text::numeric;
  else
    raise exception '% must be a number', p_key using errcode = '22023';
  end if;
  if v_number < p_min or v_number > p_max then
    raise exception '% must be between % and %', p_key, p_min, p_max using errcode = '22023';
  end if;
  if p_whole and v_number <> trunc(v_number) then
    raise exception '% must be a whole number', p_key using errcode = '22023';
  end if;
  return v_number;
end
$$;

comment on function public.request_text(jsonb, text, integer, boolean) is
  'A string field of a request body: trimmed, null when absent or empty; 22023 naming the field when not a string, too long, or holding control characters.';
comment on function public.request_number(jsonb, text, numeric, numeric, boolean) is
  'A number field of a request body (a JSON number or a numeric string), within [p_min, p_max] (and whole with p_whole); null when absent; 22023 naming the field otherwise.';

-- request_generation ----------------------------------------------------------------------------
create or replace function public.request_generation(p_request jsonb) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user uuid := auth.uid();
  v_limits public.picture_settings := public.picture_limits();
  v_prompt text;
  v_negative text;
  v_model_id text;
  v_version text;
  v_style text;
  v_source text;
  v_width integer;
  v_height integer;
  v_steps integer;
  v_guidance numeric;
  v_seed bigint;
  v_strength numeric;
  v_model public.models;
  v_generation uuid;
  v_job uuid;
begin
  if v_user is null then
    raise exception 'request_generation needs a signed-in user''s access token' using errcode = '42501';
  end if;
  if jsonb_typeof(p_request) is distinct from 'object' then
    raise exception 'Request body must be a JSON object' using errcode = '22023';
  end if;
  v_prompt := public.request_text(p_request, 'prompt', v_limits.max_prompt_chars, true);
  if v_prompt is null then
    raise exception 'prompt is required and must be a non-empty string' using errcode = '22023';
  end if;
  v_model_id := public.request_text(p_request, 'model_id', 200);
  if v_model_id is null then
    raise exception 'model_id is required and must be a non-empty string' using errcode = '22023';
  end if;
  v_version := public.request_text(p_request, 'model_version', 200);
  v_negative := public.request_text(p_request, 'negative_prompt', v_limits.max_prompt_chars, true);
  v_style := public.request_text(p_request, 'style', 200);
  v_width := public.request_number(p_request, 'width', v_limits.min_side, v_limits.max_side, true);
  v_height := public.request_number(p_request, 'height', v_limits.min_side, v_limits.max_side, true);
  v_steps := public.request_number(p_request, 'num_inference_steps', v_limits.min_steps, v_limits.max_steps, true);
  v_guidance := public.request_number(p_request, 'guidance_scale', 0, v_limits.max_guidance_scale);
  v_seed := public.request_number(p_request, 'seed', 0, 2147483647, true);
  v_source := public.request_text(p_request, 'source_image_url', 2048);
  if v_source is not null and v_source !~* '^https?://[^/?#[:space:]]+' then
    raise exception 'source_image_url must be an https URL on an allowed host' using errcode = '22023';
  end if;
  v_strength := public.request_number(p_request, 'strength', 0, 1);
  if not exists (select 1 from auth.users u where u.id = v_user) then
    raise exception 'User not found' using errcode = 'PT401';
  end if;

  v_model := public.catalogue_model(v_model_id, v_version);
  -- The model's defaults, then start-generation's own.
  v_width := coalesce(v_width, v_model.default_width, 1024);
  v_height := coalesce(v_height, v_model.default_height, 1024);
  v_steps := coalesce(v_steps, v_model.default_steps, 30);
  v_guidance := coalesce(v_guidance, v_model.default_guidance_scale, 7.5);
  v_version := coalesce(v_version, v_model.version);

  -- pending (row created) then queued (job enqueued), as the original did. The row's
  -- triggers check the catalogue, the bounds and the user's in-flight limit.
  insert into public.image_generations
    (user_id, prompt, negative_prompt, model, style, width, height, steps, guidance_scale, status)
  values (v_user, v_prompt, v_negative, coalesce(nullif(btrim(v_model.name), ''), v_model.replicate_id),
          v_style, v_width, v_height, v_steps, v_guidance, 'pending')
  returning id into v_generation;

  v_job := public.enqueue_job('generate-image', jsonb_build_object(
    'generation_id', v_generation,
    'user_id', v_user,
    'prompt', v_prompt,
    'negative_prompt', v_negative,
    'model_id', v_model.replicate_id,
    'model_version', v_version,
    'width', v_width,
    'height', v_height,
    'num_inference_steps', v_steps,
    'guidance_scale', v_guidance,
    'seed', v_seed,
    'source_image_url', v_source,
    'strength', v_strength));

  update public.image_generations set status = 'queued', job_id = v_job where id = v_generation;
  return jsonb_build_object('generation_id', v_generation, 'job_id', v_job);
end
$$;

comment on function public.request_generation(jsonb) is
  'start-generation for the signed-in user (auth.uid(); authenticated only), in one transaction. p_request is the start-generation body (prompt, model_id, model_version, width, height, num_inference_steps, guidance_scale, seed, negative_prompt, source_image_url, strength, style); missing numbers take the model''s defaults, then 1024 x 1024, 30 steps, guidance 7.5. Creates the generation (pending, then queued) and its generate-image job; returns {"generation_id", "job_id"}. Errors: 22023 bad input or unknown model (HTTP 400), PT429 too many in flight (429), PT401 user gone (401). Source-image hosts are checked by the caller and the worker.';

revoke all on function public.request_text(jsonb, text, integer, boolean) from public, anon, authenticated;
revoke all on function public.request_number(jsonb, text, numeric, numeric, boolean) from public, anon, authenticated;
revoke all on function public.request_generation(jsonb) from public, anon, service_role;
grant execute on function public.request_generation(jsonb) to authenticated;

-- create_generation: as before (20261129000900), the limit from picture_settings -----------------
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
  v_existing uuid;
  v_gen public.image_generations;
  v_payload jsonb;
  v_job uuid;
begin
  -- p_max_in_flight is kept for callers of the old signature and ignored: the limit is
  -- public.picture_settings.max_in_flight_per_user.
  if p_user_id is null then
    raise exception 'create_generation: p_user_id is required' using errcode = '22004';
  end if;
  if jsonb_typeof(p_generation) is distinct from 'object'
     or jsonb_typeof(coalesce(p_payload, '{}'::jsonb)) <> 'object' then
    raise exception 'create_generation: p_generation and p_payload must be JSON objects'
      using errcode = '22023';
  end if;
  if coalesce(btrim(p_generation ->> 'prompt'), '') = '' then
    raise exception 'prompt is required and must be a non-empty string' using errcode = '22023';
  end if;
  v_existing := nullif(p_generation ->> 'id', '')::uuid;

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

  -- A new row is counted by its insert trigger; an existing pending row is being started.
  perform public.assert_generation_slot(p_user_id, v_existing);

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
  'start-generation in one transaction for a given user (service_role only; used by the legacy generate-image, whose client created a pending row first: p_generation.id). Per-user in-flight limit from picture_settings (PT429 -> HTTP 429; p_max_in_flight is ignored), the catalogue and bounds of the row and payload (22023 -> 400), the image_generations row (queued), the generate-image job (payload + generation_id, user_id) and job_id on the row. Returns {generation_id, job_id}.';

-- cancel_generation: the rules do the stopping; unknown or foreign ids are 404 ---------------------
create or replace function public.cancel_generation(p_generation_id uuid)
returns public.image_generations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_gen public.image_generations;
begin
  select * into v_gen from public.image_generations where id = p_generation_id for update;
  if not found
     or (coalesce(auth.role(), '') <> 'service_role'
         -- a direct database session (dashboard SQL editor, psql) is an operator, not a user
         and session_user::text in ('authenticator', 'anon', 'authenticated', 'service_role')
         and v_gen.user_id is distinct from auth.uid()) then
    raise exception 'generation % not found', p_generation_id using errcode = 'PT404';
  end if;
  if v_gen.status in ('completed', 'failed', 'cancelled') then
    return v_gen;
  end if;
  -- generation_40_stop_work cancels its jobs in this transaction and, when no running job
  -- holds its prediction, enqueues the prediction's cancel at the provider.
  update public.image_generations
  set status = 'cancelled', completed_at = now(),
      error_message = coalesce(error_message, 'Cancelled by the user.')
  where id = p_generation_id
  returning * into v_gen;
  return v_gen;
end
$$;

revoke all on function public.cancel_generation(uuid) from public, anon;
grant execute on function public.cancel_generation(uuid) to authenticated, service_role;

comment on function public.cancel_generation(uuid) is
  'Cancel a generation (its owner or service_role; anyone else gets PT404 -> HTTP 404): the row becomes cancelled, its pending and running jobs cancelled (a running job notices at its next heartbeat and cancels its prediction); a prediction that runs with no job holding it is cancelled at the provider by a process-webhook job.';

-- retry_jobs: as before (20261129001000); the one door that reopens a finished generation ------
create or replace function public.retry_jobs(
  p_job_id uuid default null,
  p_job_type text default null,
  p_limit integer default 1000,
  p_include_cancelled boolean default false
) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_statuses text[] := case when coalesce(p_include_cancelled, false)
                            then array['failed', 'cancelled'] else array['failed'] end;
  v_job record;
  v_generation uuid;
  v_count integer := 0;
begin
  if p_job_id is not null
     and not exists (select 1 from public.job_queue where id = p_job_id) then
    raise exception 'job % not found', p_job_id using errcode = 'P0002';
  end if;
  -- The documented escape of the status rule (generation_status_change_allowed): a failed
  -- or cancelled generation may go back to queued in this transaction.
  perform pg_catalog.set_config('picture.reopen_generations', 'on', true);
  for v_job in
    select j.id, j.dedupe_key, j.payload ->> 'generation_id' as generation_id
    from public.job_queue j
    where j.status = any (v_statuses)
      and (p_job_id is null or j.id = p_job_id)
      and (p_job_type is null or j.job_type = p_job_type)
    order by coalesce(j.completed_at, j.updated_at), j.created_at
    limit greatest(coalesce(p_limit, 1000), 0)
    for update skip locked
  loop
    -- A dedupe key allows one live job: skip a job whose key is live again (a newer job,
    -- or an older failure of the same key retried earlier in this loop).
    if v_job.dedupe_key is not null and exists (
         select 1 from public.job_queue l
         where l.dedupe_key = v_job.dedupe_key and l.status in ('pending', 'processing')) then
      continue;
    end if;
    update public.job_queue
    set status = 'pending', attempt_number = 0, scheduled_at = now(), started_at = null,
        completed_at = null, locked_by = null, locked_until = null, result = null
    where id = v_job.id;
    v_generation := case
      when v_job.generation_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
      then v_job.generation_id::uuid
    end;
    if v_generation is not null then
      update public.image_generations
      set status = 'queued', completed_at = null
      where id = v_generation
        and status = any (v_statuses);
    end if;
    v_count := v_count + 1;
  end loop;
  perform pg_catalog.set_config('picture.reopen_generations', '', true);
  return v_count;
end
$$;

revoke all on function public.retry_jobs(uuid, text, integer, boolean) from public, anon, authenticated;
grant execute on function public.retry_jobs(uuid, text, integer, boolean) to service_role;

comment on function public.retry_jobs(uuid, text, integer, boolean) is
  'Operator retry: failed jobs (and cancelled ones with p_include_cancelled) go back to pending, due now, attempts reset; their generations back to queued (the only way a finished generation is reopened). One job by id (raises P0002 if unknown), or up to p_limit of one job_type (all types when null), oldest first. Returns how many were requeued.';
