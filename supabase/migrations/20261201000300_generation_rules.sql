-- What may happen to image_generations, whoever writes it: the database is the boundary.
-- Idempotent: functions replaced, triggers and policies dropped and re-created, grants
-- re-applied. No data changes.
--
-- Statuses: unfinished = pending, queued, processing, downloading;
--           finished   = completed, failed, cancelled.
--
-- Users (PostgREST with a user's JWT: the roles anon and authenticated) may
--   INSERT  their own row with user_id, prompt, negative_prompt, model, style, width,
--           height, steps, guidance_scale and status = 'pending' (column grants; every
--           other column is server-owned: a forged one is refused with 42501);
--   UPDATE  their own unfinished row: status to cancelled or failed, error_message
--           (capped); completed_at and updated_at get the server's time whatever was sent;
--   DELETE  their own row.
-- Every new generation, through any door (a user's insert, the service role, the RPCs),
-- names exactly one active catalogue model, stays within the global bounds of
-- picture_settings and counts against its user's in-flight limit.
-- A cancel (by anyone), a user's failure mark or a delete of an unfinished generation
-- stops its jobs and, when no job holds it, its Replicate prediction.
-- A finished generation stays finished: only retry_jobs reopens one.
-- An image is stored only for a generation that is still wanted, and storing it completes
-- the generation in the same transaction.
--
-- SQLSTATEs (PostgREST's HTTP status in brackets):
--   42501 [403]  a column or status change the caller may not write
--   22023 [400]  invalid request: unknown model, out-of-bounds size, steps, prompt...
--   PT429 [429]  too many generations in flight (picture_settings.max_in_flight_per_user)
--   PT409 [409]  a status change out of a finished status
--   PT410 [410]  an image for a generation that was cancelled, failed or deleted

-- The status rule, in one place -------------------------------------------------------------
create or replace function public.generation_status_change_allowed(
  p_from text,
  p_to text,
  p_by_user boolean,
  p_reopen boolean default false
) returns boolean
language sql
immutable
set search_path = ''
as $$
  -- from \ by        a user (anon, authenticated)    the server (service role, RPCs, cron)
  -- pending          cancelled or failed             any status
  -- queued           cancelled or failed             any status
  -- processing       cancelled or failed             any status
  -- downloading      cancelled or failed             any status
  -- completed        nothing                         nothing
  -- failed           nothing                         nothing (retry_jobs: queued)
  -- cancelled        nothing                         nothing (retry_jobs: queued)
  -- A user's write must change the status; the server may leave it as it is.
  select case
    when p_by_user then
      p_from in ('pending', 'queued', 'processing', 'downloading')
      and p_to in ('cancelled', 'failed')
    when p_from is not distinct from p_to then true
    when p_from in ('completed', 'failed', 'cancelled') then
      coalesce(p_reopen, false) and p_from in ('failed', 'cancelled') and p_to = 'queued'
    else true
  end
$$;

comment on function public.generation_status_change_allowed(text, text, boolean, boolean) is
  'The status rule of image_generations, in one place: users move their unfinished generation to cancelled or failed only; the server moves an unfinished generation anywhere; a finished one (completed, failed, cancelled) never changes again, except that retry_jobs reopens a failed or cancelled one as queued (p_reopen).';

-- Users' writes --------------------------------------------------------------------------
create or replace function public.apply_user_generation_rules() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_cap integer;
begin
  -- Fired only for the API's user roles (the trigger's WHEN clause).
  if new.user_id is distinct from auth.uid() then
    raise exception 'A user creates and changes their own generations only'
      using errcode = '42501';
  end if;
  if tg_op = 'INSERT' then
    if new.status is distinct from 'pending' then
      raise exception 'A new generation starts as pending; status % is the server''s to set', new.status
        using errcode = '42501',
              hint = 'Insert user_id, prompt, negative_prompt, model, style, width, height, steps and guidance_scale; leave status out or send pending.';
    end if;
    new.created_at := now();
    new.updated_at := now();
    return new;
  end if;
  if not public.generation_status_change_allowed(old.status, new.status, true) then
    raise exception 'A user may only change the status of an unfinished generation to cancelled or failed (not % to %)',
      old.status, new.status
      using errcode = '42501',
            hint = 'Cancel: status = cancelled. Report a failure: status = failed with error_message.';
  end if;
  v_cap := (public.picture_limits()).max_error_chars;
  if char_length(new.error_message) > v_cap then
    raise exception 'error_message is too long (% characters, at most %)', char_length(new.error_message), v_cap
      using errcode = '22023';
  end if;
  new.completed_at := now();
  new.updated_at := now();
  return new;
end
$$;

comment on function public.apply_user_generation_rules() is
  'BEFORE trigger for users (anon, authenticated): a new row starts pending; an update only moves an unfinished row to cancelled or failed, error_message capped (picture_settings.max_error_chars); completed_at and updated_at take the server''s time.';

-- The server's status changes -------------------------------------------------------------
create or replace function public.guard_generation_status() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if not public.generation_status_change_allowed(
       old.status, new.status, false,
       coalesce(current_setting('picture.reopen_generations', true), '') = 'on') then
    raise exception 'generation % is %: its status cannot become % (a finished generation stays finished)',
      old.id, old.status, new.status
      using errcode = 'PT409',
            hint = 'An operator reopens a failed or cancelled generation with retry_jobs.';
  end if;
  return new;
end
$$;

comment on function public.guard_generation_status() is
  'BEFORE trigger for every writer but users: a finished generation (completed, failed, cancelled) never changes status (PT409); retry_jobs alone reopens one (transaction setting picture.reopen_generations = on).';

-- Every new generation: catalogue, bounds, limit ------------------------------------------------
create or replace function public.assert_generation_slot(p_user_id uuid, p_exclude uuid default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_limit integer := (public.picture_limits()).max_in_flight_per_user;
  v_in_flight integer;
begin
  if p_user_id is null or v_limit = 0 then
    return;
  end if;
  -- One request per user at a time: two concurrent requests cannot both pass the check.
  -- (The key is the one create_generation always used.)
  perform pg_catalog.pg_advisory_xact_lock(
    pg_catalog.hashtextextended('public.create_generation:' || p_user_id::text, 0));
  -- In flight: queued, processing, downloading, and pending rows touched within the hour
  -- (an older pending row is a legacy request whose client never started it; it must not
  -- lock its user out for good).
  select count(*) into v_in_flight
  from public.image_generations g
  where g.user_id = p_user_id
    and (g.status in ('queued', 'processing', 'downloading')
         or (g.status = 'pending' and g.updated_at > now() - interval '1 hour'))
    and g.id is distinct from p_exclude;
  if v_in_flight >= v_limit then
    raise exception 'Too many generations in progress (% of % allowed). Wait for one to finish and try again.',
      v_in_flight, v_limit
      using errcode = 'PT429',
            hint = 'public.picture_settings.max_in_flight_per_user sets the per-user limit.';
  end if;
end
$$;

comment on function public.assert_generation_slot(uuid, uuid) is
  'Raises PT429 when the user already has picture_settings.max_in_flight_per_user generations in flight (p_exclude: a row that is being started, not added). Serialises a user''s requests with a transaction-scoped advisory lock.';

create or replace function public.check_generation_request() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_limits public.picture_settings := public.picture_limits();
  v_matches integer;
begin
  if coalesce(btrim(new.prompt), '') = '' then
    raise exception 'prompt is required and must be a non-empty string' using errcode = '22023';
  end if;
  if char_length(new.prompt) > v_limits.max_prompt_chars then
    raise exception 'prompt is too long (% characters, at most %)', char_length(new.prompt), v_limits.max_prompt_chars
      using errcode = '22023';
  end if;
  if char_length(new.negative_prompt) > v_limits.max_prompt_chars then
    raise exception 'negative_prompt is too long (% characters, at most %)',
      char_length(new.negative_prompt), v_limits.max_prompt_chars
      using errcode = '22023';
  end if;
  if char_length(new.style) > 200 then
    raise exception 'style is too long (% characters, at most 200)', char_length(new.style)
      using errcode = '22023';
  end if;
  select count(*) into v_matches from public.models m
  where m.is_active and (m.name = new.model or m.replicate_id = new.model);
  if v_matches <> 1 then
    raise exception '%', case
        when v_matches = 0 then format(
          'Unknown model: %s (model must name one active model of the catalogue, by name or replicate_id)',
          coalesce(new.model, 'null'))
        else format('model %s names %s active catalogue models; use its replicate_id', new.model, v_matches)
      end
      using errcode = '22023', hint = 'public.models lists the models (is_active = true).';
  end if;
  if new.width is not null and new.width not between v_limits.min_side and v_limits.max_side then
    raise exception 'width must be between % and %', v_limits.min_side, v_limits.max_side using errcode = '22023';
  end if;
  if new.height is not null and new.height not between v_limits.min_side and v_limits.max_side then
    raise exception 'height must be between % and %', v_limits.min_side, v_limits.max_side using errcode = '22023';
  end if;
  if new.steps is not null and new.steps not between v_limits.min_steps and v_limits.max_steps then
    raise exception 'steps must be between % and %', v_limits.min_steps, v_limits.max_steps using errcode = '22023';
  end if;
  if new.guidance_scale is not null and new.guidance_scale not between 0 and v_limits.max_guidance_scale then
    raise exception 'guidance_scale must be between 0 and %', v_limits.max_guidance_scale using errcode = '22023';
  end if;
  if tg_op = 'INSERT' and new.status in ('pending', 'queued', 'processing', 'downloading') then
    perform public.assert_generation_slot(new.user_id, new.id);
  end if;
  return new;
end
$$;

comment on function public.check_generation_request() is
  'BEFORE trigger for every writer: a new (or re-specified) generation names exactly one active catalogue model (models.name or replicate_id), keeps width, height, steps, guidance_scale and the prompts within picture_settings, and a new unfinished one counts against its user''s in-flight limit. 22023 / PT429.';

-- Stopping the work of a generation the user gave up on -----------------------------------------
create or replace function public.stop_generation_work(
  p_generation_id uuid,
  p_status text,
  p_prediction_id text,
  p_user_id uuid
) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_held boolean;
begin
  -- A prediction runs with no job holding it in webhook mode (processing), or between the
  -- attempts of a retried job (queued); a running generate-image job holds it.
  v_held := exists (
    select 1 from public.job_queue j
    where j.payload ->> 'generation_id' = p_generation_id::text
      and j.status = 'processing' and j.job_type = 'generate-image');
  -- Pending jobs never run; a running job sees the cancellation at its next heartbeat
  -- (heartbeat_job returns status cancelled) and cancels its Replicate prediction.
  update public.job_queue
  set status = 'cancelled', completed_at = now(), locked_until = null
  where payload ->> 'generation_id' = p_generation_id::text
    and status in ('pending', 'processing');
  -- Otherwise ask a worker to cancel the prediction at the provider.
  if p_prediction_id is not null and not v_held and p_status in ('queued', 'processing') then
    perform public.enqueue_job(
      'process-webhook',
      jsonb_build_object('prediction_id', p_prediction_id, 'cancel', true, 'user_id', p_user_id),
      1, 3, now(), 'cancel:' || p_prediction_id);
  end if;
end
$$;

comment on function public.stop_generation_work(uuid, text, text, uuid) is
  'Cancel the pending and running jobs of a generation; when no running generate-image job holds its prediction, enqueue a process-webhook job {"prediction_id", "cancel": true} (dedupe key cancel:<prediction_id>) that cancels it at Replicate.';

create or replace function public.stop_generation_on_change() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' then
    perform public.stop_generation_work(old.id, old.status, old.replicate_prediction_id, old.user_id);
    return old;
  end if;
  perform public.stop_generation_work(
    new.id, old.status, coalesce(new.replicate_prediction_id, old.replicate_prediction_id), new.user_id);
  return new;
end
$$;

comment on function public.stop_generation_on_change() is
  'AFTER trigger: an unfinished generation that is cancelled (by anyone), marked failed by its user, or deleted has its work stopped (stop_generation_work) in the same transaction.';

-- Images only for generations still wanted; storing one completes the generation ----------------
create or replace function public.check_image_generation() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_status text;
begin
  if new.generation_id is null then
    return new;
  end if;
  -- Lock the generation: a concurrent cancel either comes first (and this insert is
  -- refused) or waits and finds the generation completed.
  select g.status into v_status from public.image_generations g
  where g.id = new.generation_id
  for update;
  if not found then
    raise exception 'generation % no longer exists: its image is not stored', new.generation_id
      using errcode = 'PT410', hint = 'Remove the uploaded object; the user deleted the generation.';
  end if;
  if v_status in ('cancelled', 'failed') then
    raise exception 'generation % is %: its image is not stored', new.generation_id, v_status
      using errcode = 'PT410', hint = 'Remove the uploaded object; the generation was given up.';
  end if;
  return new;
end
$$;

create or replace function public.complete_generation_with_image() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.image_generations
  set status = 'completed', completed_at = now(), error_message = null
  where id = new.generation_id
    and status in ('pending', 'queued', 'processing', 'downloading');
  return new;
end
$$;

comment on function public.check_image_generation() is
  'BEFORE INSERT on images: refuses (PT410) an image for a generation that was deleted, cancelled or failed.';
comment on function public.complete_generation_with_image() is
  'AFTER INSERT on images: the generation becomes completed in the same transaction, so a cancel can never leave a cancelled generation with a stored image.';

-- Triggers -------------------------------------------------------------------------------------
drop trigger if exists generation_10_user_rules on public.image_generations;
create trigger generation_10_user_rules
  before insert or update on public.image_generations
  for each row
  when (current_user in ('anon', 'authenticated'))
  execute function public.apply_user_generation_rules();

drop trigger if exists generation_20_status_guard on public.image_generations;
create trigger generation_20_status_guard
  before update of status on public.image_generations
  for each row
  when (old.status is distinct from new.status and current_user not in ('anon', 'authenticated'))
  execute function public.guard_generation_status();

drop trigger if exists generation_30_check_insert on public.image_generations;
create trigger generation_30_check_insert
  before insert on public.image_generations
  for each row
  execute function public.check_generation_request();

drop trigger if exists generation_30_check_update on public.image_generations;
create trigger generation_30_check_update
  before update on public.image_generations
  for each row
  when ((old.user_id, old.prompt, old.negative_prompt, old.model, old.style, old.width, old.height,
         old.steps, old.guidance_scale)
        is distinct from
        (new.user_id, new.prompt, new.negative_prompt, new.model, new.style, new.width, new.height,
         new.steps, new.guidance_scale))
  execute function public.check_generation_request();

drop trigger if exists generation_40_stop_work on public.image_generations;
create trigger generation_40_stop_work
  after update of status on public.image_generations
  for each row
  when (old.status in ('pending', 'queued', 'processing', 'downloading')
        and (new.status = 'cancelled'
             or (new.status = 'failed' and current_user in ('anon', 'authenticated'))))
  execute function public.stop_generation_on_change();

drop trigger if exists generation_40_stop_work_on_delete on public.image_generations;
create trigger generation_40_stop_work_on_delete
  after delete on public.image_generations
  for each row
  when (old.status in ('pending', 'queued', 'processing', 'downloading'))
  execute function public.stop_generation_on_change();

drop trigger if exists images_10_generation_wanted on public.images;
create trigger images_10_generation_wanted
  before insert on public.images
  for each row execute function public.check_image_generation();

drop trigger if exists images_20_complete_generation on public.images;
create trigger images_20_complete_generation
  after insert on public.images
  for each row
  when (new.generation_id is not null)
  execute function public.complete_generation_with_image();

-- Grants: users write only the columns above (20261129000400 granted the whole row). ---------
revoke insert, update on public.image_generations from anon, authenticated;
grant insert (user_id, prompt, negative_prompt, model, style, width, height, steps, guidance_scale, status)
  on public.image_generations to authenticated;
grant update (status, error_message, completed_at, updated_at) on public.image_generations to authenticated;

-- Policies: permissive ones let users do it; restrictive ones bound it whatever other
-- policies a deployment carries (variant M has "Users can update own generations").
drop policy if exists "picture: users stop own unfinished generations" on public.image_generations;
create policy "picture: users stop own unfinished generations" on public.image_generations
  for update to authenticated
  using (user_id = (select auth.uid()) and status in ('pending', 'queued', 'processing', 'downloading'))
  with check (user_id = (select auth.uid()) and status in ('cancelled', 'failed'));

drop policy if exists "picture: user updates only stop own unfinished generations" on public.image_generations;
create policy "picture: user updates only stop own unfinished generations" on public.image_generations
  as restrictive
  for update to anon, authenticated
  using (user_id = (select auth.uid()) and status in ('pending', 'queued', 'processing', 'downloading'))
  with check (user_id = (select auth.uid()) and status in ('cancelled', 'failed'));

drop policy if exists "picture: user inserts are own and pending" on public.image_generations;
create policy "picture: user inserts are own and pending" on public.image_generations
  as restrictive
  for insert to anon, authenticated
  with check (user_id = (select auth.uid()) and status = 'pending');

-- Trigger and helper functions are not API calls.
revoke all on function public.generation_status_change_allowed(text, text, boolean, boolean) from public, anon, authenticated;
revoke all on function public.apply_user_generation_rules() from public, anon, authenticated;
revoke all on function public.guard_generation_status() from public, anon, authenticated;
revoke all on function public.assert_generation_slot(uuid, uuid) from public, anon, authenticated;
revoke all on function public.check_generation_request() from public, anon, authenticated;
revoke all on function public.stop_generation_work(uuid, text, text, uuid) from public, anon, authenticated;
revoke all on function public.stop_generation_on_change() from public, anon, authenticated;
revoke all on function public.check_image_generation() from public, anon, authenticated;
revoke all on function public.complete_generation_with_image() from public, anon, authenticated;
grant execute on function public.generation_status_change_allowed(text, text, boolean, boolean) to service_role;

comment on column public.image_generations.user_id is
  'The owner. A user inserts rows for themselves only (pending, catalogue model, within picture_settings).';
