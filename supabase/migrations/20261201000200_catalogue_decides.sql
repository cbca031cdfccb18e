-- The catalogue decides what runs. A generate-image job names a model (model_id, a
-- models.replicate_id) and maybe a version hash (model_version); whoever enqueues it (the
-- service role included: the original Deno start-generation passes the client's
-- model_version straight through), the model must be an active catalogue row and the
-- version, when given, the catalogue's own. Idempotent: functions are replaced, grants
-- re-applied.
--
-- SQLSTATE 22023 (invalid_parameter_value, HTTP 400 through PostgREST), the message naming
-- the field.

create or replace function public.catalogue_model(
  p_model_id text,
  p_model_version text default null
) returns public.models
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_model public.models;
  v_version text := nullif(btrim(coalesce(p_model_version, '')), '');
begin
  if coalesce(btrim(p_model_id), '') = '' then
    raise exception 'model_id is required: a replicate_id of the model catalogue'
      using errcode = '22023';
  end if;
  select * into v_model from public.models m
  where m.replicate_id = p_model_id and m.is_active;
  if not found then
    raise exception 'Unknown model: % (model_id must be an active model of the catalogue)', p_model_id
      using errcode = '22023', hint = 'public.models lists the models; is_active must be true.';
  end if;
  if v_version is not null and v_version is distinct from v_model.version then
    raise exception 'model_version % is not the catalogue''s version for model_id %', v_version, p_model_id
      using errcode = '22023',
            hint = 'Leave model_version out (the catalogue''s version is used) or send public.models.version.';
  end if;
  return v_model;
end
$$;

revoke all on function public.catalogue_model(text, text) from public, anon, authenticated;
grant execute on function public.catalogue_model(text, text) to service_role;
comment on function public.catalogue_model(text, text) is
  'The active catalogue row of model_id (a replicate_id) when p_model_version is null, empty or the catalogue''s version; otherwise raises 22023 naming model_id or model_version. enqueue_job checks every generate-image payload with it; the worker calls it (service_role) before it pays for a prediction.';

-- enqueue_job: as before (20261129000300), plus the catalogue check of generate-image jobs.
-- A payload without a version gets the catalogue's, so a community model (sdxl) runs with
-- its hash whichever door enqueued it.
create or replace function public.enqueue_job(
  p_job_type text,
  p_payload jsonb,
  p_priority integer default 0,
  p_max_attempts integer default 3,
  p_scheduled_at timestamptz default now(),
  p_dedupe_key text default null
) returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_user uuid;
  v_candidate text := p_payload ->> 'user_id';
  v_payload jsonb := coalesce(p_payload, '{}'::jsonb);
  v_model public.models;
  v_id uuid;
begin
  if p_job_type = 'generate-image' then
    if jsonb_typeof(v_payload) <> 'object' then
      raise exception 'enqueue_job: a generate-image payload must be a JSON object'
        using errcode = '22023';
    end if;
    v_model := public.catalogue_model(v_payload ->> 'model_id', v_payload ->> 'model_version');
    if nullif(btrim(coalesce(v_payload ->> 'model_version', '')), '') is null then
      v_payload := v_payload || jsonb_build_object('model_version', v_model.version);
    end if;
  end if;
  v_user := auth.uid();
  if v_user is null and v_candidate ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    select u.id into v_user from auth.users u where u.id = v_candidate::uuid;
  end if;
  loop
    insert into public.job_queue (job_type, payload, priority, max_attempts, scheduled_at, created_by, dedupe_key)
    values (p_job_type, v_payload, coalesce(p_priority, 0),
            greatest(coalesce(p_max_attempts, 3), 1), coalesce(p_scheduled_at, now()), v_user, p_dedupe_key)
    on conflict (dedupe_key) where dedupe_key is not null and status in ('pending', 'processing')
    do nothing
    returning id into v_id;
    if v_id is not null then
      return v_id;
    end if;
    -- A live job with this key exists: hand back its id (loop if it just finished).
    select j.id into v_id from public.job_queue j
    where j.dedupe_key = p_dedupe_key and j.status in ('pending', 'processing');
    if v_id is not null then
      return v_id;
    end if;
  end loop;
end
$$;

comment on function public.enqueue_job(text, jsonb, integer, integer, timestamptz, text) is
  'Enqueue a job (service_role only). A generate-image payload must name an active catalogue model (model_id) and, if it gives model_version, the catalogue''s version (else 22023); a missing version is filled from the catalogue. With p_dedupe_key, returns the id of the live job with that key instead of adding a second one.';

revoke all on function public.enqueue_job(text, jsonb, integer, integer, timestamptz, text) from public, anon, authenticated;
grant execute on function public.enqueue_job(text, jsonb, integer, integer, timestamptz, text) to service_role;
