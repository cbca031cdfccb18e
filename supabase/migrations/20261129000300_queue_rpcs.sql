-- Queue RPCs, callable through PostgREST by name. Old overloads (variants M and G) are
-- dropped first so PostgREST never sees two candidates for one name.

do $$
declare
  f record;
begin
  for f in
    select p.oid::regprocedure as sig
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public'
      and p.proname in ('enqueue_job', 'claim_next_job', 'claim_jobs', 'complete_job',
                        'heartbeat_job', 'release_job', 'requeue_stale_jobs', 'cancel_generation')
  loop
    execute format('drop function %s', f.sig);
  end loop;
end $$;

-- enqueue_job ---------------------------------------------------------------------------
create function public.enqueue_job(
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
  v_id uuid;
begin
  v_user := auth.uid();
  if v_user is null and v_candidate ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    select u.id into v_user from auth.users u where u.id = v_candidate::uuid;
  end if;
  loop
    insert into public.job_queue (job_type, payload, priority, max_attempts, scheduled_at, created_by, dedupe_key)
    values (p_job_type, coalesce(p_payload, '{}'::jsonb), coalesce(p_priority, 0),
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
  'Enqueue a job (service_role only). With p_dedupe_key, returns the id of the live job with that key instead of adding a second one.';

-- claim_next_job / claim_jobs ---------------------------------------------------------------
create function public.claim_jobs(
  p_limit integer,
  p_job_types text[] default null,
  p_worker_id text default null,
  p_lease_seconds integer default 300,
  p_exclude_suspects boolean default false
) returns setof public.job_queue
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- plpgsql, not sql: a `language sql` function with a SET clause is never inlined and its
  -- statement gets a generic plan, which with a deep backlog hash-joins over the whole
  -- table (measured 18.9 ms per claim at 50,000 pending instead of 1.5-3 ms). Here the
  -- statement is planned with the real arguments and stays on the partial pending index.
  return query
    -- The locking subquery runs exactly once (a materialized CTE). Written as
    -- "where id in (select ... limit n for update skip locked)" the planner may choose a
    -- nested-loop semi join that rescans the subquery per outer row; each rescan skips the
    -- rows this command already updated and locks the next ones, so more than p_limit jobs
    -- got claimed.
    with picked as materialized (
      select c.id from public.job_queue c
      where c.status = 'pending'
        and c.scheduled_at <= now()
        and (p_job_types is null or c.job_type = any (p_job_types))
        -- Suspects: jobs whose last worker died holding them (requeue_stale_jobs marked
        -- them). A worker runs them alone so a job that kills its process takes no
        -- bystanders with it; it asks for them only when it is idle.
        and not (coalesce(p_exclude_suspects, false)
                 and coalesce(c.error_details ? 'lease_expired_at', false))
      order by c.priority desc, c.scheduled_at, c.created_at
      limit greatest(coalesce(p_limit, 1), 0)
      for update skip locked
    )
    update public.job_queue j
    set status = 'processing',
        attempt_number = j.attempt_number + 1,
        started_at = now(),
        locked_by = p_worker_id,
        locked_until = now() + make_interval(secs => greatest(coalesce(p_lease_seconds, 300), 1)),
        updated_at = now()
    from picked
    where j.id = picked.id
    returning j.*;
end
$$;

create function public.claim_next_job(
  p_job_types text[] default null,
  p_worker_id text default null,
  p_lease_seconds integer default 300
) returns setof public.job_queue
language sql
security definer
set search_path = ''
as $$
  select * from public.claim_jobs(1, p_job_types, p_worker_id, p_lease_seconds)
$$;

comment on function public.claim_jobs(integer, text[], text, integer, boolean) is
  'Atomically claim up to p_limit due pending jobs (priority desc, scheduled_at, created_at) with FOR UPDATE SKIP LOCKED; each gets a lease of p_lease_seconds. With p_exclude_suspects, jobs whose last worker died holding them (error_details.lease_expired_at) are skipped: a busy worker leaves them to an idle one, which runs them alone.';
comment on function public.claim_next_job(text[], text, integer) is
  'claim_jobs(1, ...). Called with no arguments it behaves like the original (variant G).';

-- complete_job -------------------------------------------------------------------------------
create or replace function public.job_retry_delay(p_attempt integer) returns interval
language sql
volatile
set search_path = ''
as $$
  -- Exponential from 2 s (2, 4, 8, ...), capped at 300 s, with +-20 % jitter. The exponent
  -- is clamped first: power(2, n) overflows double precision from n = 1024 on.
  select make_interval(secs => least(300, power(2, least(greatest(coalesce(p_attempt, 1), 1), 16)))
                               * (0.8 + 0.4 * random()))
$$;

comment on function public.job_retry_delay(integer) is
  'Retry backoff after a failed attempt: 2^attempt seconds (from 2 s), capped at 300 s, +-20 % jitter.';

create function public.complete_job(
  p_job_id uuid,
  p_result jsonb default null,
  p_error text default null,
  p_error_details jsonb default null,
  p_retryable boolean default true,
  p_worker_id text default null
) returns setof public.job_queue
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.job_queue;
begin
  select * into v_job from public.job_queue where id = p_job_id for update;
  if not found then
    raise exception 'job % not found', p_job_id using errcode = 'P0002';
  end if;
  if p_worker_id is not null
     and (v_job.status <> 'processing' or v_job.locked_by is distinct from p_worker_id) then
    raise exception 'lease lost: job % is % (locked by %), not processing under worker %',
      p_job_id, v_job.status, coalesce(v_job.locked_by, 'nobody'), p_worker_id
      using errcode = 'PW001', hint = 'The job was requeued, cancelled or taken by another worker; do not report its outcome.';
  end if;

  if p_error is null then
    update public.job_queue
    set status = 'completed', result = p_result, completed_at = now(),
        locked_by = null, locked_until = null
    where id = p_job_id
    returning * into v_job;
  elsif coalesce(p_retryable, true) and v_job.attempt_number < v_job.max_attempts then
    update public.job_queue
    set status = 'pending', error_message = p_error, error_details = p_error_details,
        scheduled_at = now() + public.job_retry_delay(v_job.attempt_number),
        locked_by = null, locked_until = null
    where id = p_job_id
    returning * into v_job;
  else
    update public.job_queue
    set status = 'failed', error_message = p_error, error_details = p_error_details,
        completed_at = now(), locked_by = null, locked_until = null
    where id = p_job_id
    returning * into v_job;
  end if;
  return next v_job;
end
$$;

comment on function public.complete_job(uuid, jsonb, text, jsonb, boolean, text) is
  'Report a job outcome. Success -> completed; retryable error with attempts left -> pending after a backoff; else failed. With p_worker_id the call is fenced: it raises PW001 (lease lost) unless the job is still processing under that worker.';

-- heartbeat_job / release_job -------------------------------------------------------------
create function public.heartbeat_job(
  p_job_id uuid,
  p_worker_id text,
  p_lease_seconds integer default 300
) returns setof public.job_queue
language sql
security definer
set search_path = ''
as $$
  with extended as (
    update public.job_queue
    set locked_until = now() + make_interval(secs => greatest(coalesce(p_lease_seconds, 300), 1))
    where id = p_job_id and status = 'processing' and locked_by = p_worker_id
    returning *
  )
  select * from extended
  union all
  select * from public.job_queue j
  where j.id = p_job_id and not exists (select 1 from extended)
$$;

comment on function public.heartbeat_job(uuid, text, integer) is
  'Extend the lease of a job this worker holds. Returns the row: status cancelled or another locked_by tells the worker to stop.';

create function public.release_job(p_job_id uuid, p_worker_id text)
returns setof public.job_queue
language sql
security definer
set search_path = ''
as $$
  update public.job_queue
  set status = 'pending',
      attempt_number = greatest(attempt_number - 1, 0),
      scheduled_at = now(),
      started_at = null,
      locked_by = null,
      locked_until = null
  where id = p_job_id and status = 'processing' and locked_by = p_worker_id
  returning *
$$;

comment on function public.release_job(uuid, text) is
  'Give a claimed job back unstarted (shutdown): pending, lease freed, the attempt returned.';

-- requeue_stale_jobs -----------------------------------------------------------------------
create function public.requeue_stale_jobs() returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer := 0;
  v_job record;
  v_generation uuid;
begin
  for v_job in
    select id, attempt_number, max_attempts, payload ->> 'generation_id' as generation_id
    from public.job_queue
    where status = 'processing'
      and ((locked_until is not null and locked_until < now())
           or (locked_until is null and updated_at < now() - interval '15 minutes'))
    for update skip locked
  loop
    -- Compare uuids, not id::text: the cast would hide the primary key from the planner and
    -- every stale job would scan all of image_generations.
    v_generation := case
      when v_job.generation_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
      then v_job.generation_id::uuid
    end;
    if v_job.attempt_number >= v_job.max_attempts then
      update public.job_queue
      set status = 'failed', completed_at = now(), locked_by = null, locked_until = null,
          error_message = coalesce(error_message || ' / ', '') ||
            'lease expired on the final attempt (the worker died or hung)'
      where id = v_job.id;
      update public.image_generations
      set status = 'failed',
          error_message = 'The generation was abandoned: its worker stopped responding on the final attempt.'
      where id = v_generation
        and status not in ('completed', 'failed', 'cancelled');
    else
      update public.job_queue
      set status = 'pending', scheduled_at = now(), locked_by = null, locked_until = null,
          error_message = 'the worker running this job stopped responding (lease expired)',
          error_details = coalesce(error_details, '{}'::jsonb)
            || jsonb_build_object('lease_expired_at', now())
      where id = v_job.id;
      update public.image_generations
      set status = 'queued'
      where id = v_generation
        and status in ('processing', 'downloading');
    end if;
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

comment on function public.requeue_stale_jobs() is
  'Return jobs whose lease expired (or, without a lease, not updated for 15 minutes) to pending; jobs whose attempts are used up become failed, so a job that kills its worker cannot loop.';

-- cancel_generation ---------------------------------------------------------------------------
create function public.cancel_generation(p_generation_id uuid)
returns public.image_generations
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_gen public.image_generations;
  v_job_running boolean;
begin
  select * into v_gen from public.image_generations where id = p_generation_id for update;
  if not found
     or (coalesce(auth.role(), '') <> 'service_role'
         -- a direct database session (dashboard SQL editor, psql) is an operator, not a user
         and session_user::text in ('authenticator', 'anon', 'authenticated', 'service_role')
         and v_gen.user_id is distinct from auth.uid()) then
    raise exception 'generation % not found', p_generation_id using errcode = 'P0002';
  end if;
  if v_gen.status in ('completed', 'failed', 'cancelled') then
    return v_gen;
  end if;
  -- A prediction runs with no job holding it only in webhook mode, while `processing`.
  v_job_running := v_gen.status <> 'processing' or exists (
    select 1 from public.job_queue
    where payload ->> 'generation_id' = p_generation_id::text and status = 'processing');
  update public.image_generations
  set status = 'cancelled', completed_at = now(),
      error_message = coalesce(error_message, 'Cancelled by the user.')
  where id = p_generation_id
  returning * into v_gen;
  -- Pending jobs never run; a running job sees the cancellation at its next heartbeat
  -- (heartbeat_job returns status cancelled) and cancels its Replicate prediction.
  update public.job_queue
  set status = 'cancelled', completed_at = now(), locked_until = null
  where payload ->> 'generation_id' = p_generation_id::text
    and status in ('pending', 'processing');
  -- Webhook mode: the prediction runs with no job holding it, so no heartbeat will notice.
  -- Ask a worker to cancel it at the provider (process-webhook with cancel: true).
  if v_gen.replicate_prediction_id is not null and not v_job_running then
    perform public.enqueue_job(
      'process-webhook',
      jsonb_build_object('prediction_id', v_gen.replicate_prediction_id, 'cancel', true,
                         'user_id', v_gen.user_id),
      1, 3, now(), 'cancel:' || v_gen.replicate_prediction_id);
  end if;
  return v_gen;
end
$$;

comment on function public.cancel_generation(uuid) is
  'Cancel a generation (its owner or service_role): the row becomes cancelled, its pending and running jobs cancelled; a prediction that runs with no job holding it (webhook mode) is cancelled at the provider by a process-webhook job.';

-- Grants: the queue is driven by the worker (service_role) only. The original granted
-- enqueue_job to every signed-in user, who could then enqueue any job for any user.
revoke all on function public.enqueue_job(text, jsonb, integer, integer, timestamptz, text) from public, anon, authenticated;
revoke all on function public.claim_jobs(integer, text[], text, integer, boolean) from public, anon, authenticated;
revoke all on function public.claim_next_job(text[], text, integer) from public, anon, authenticated;
revoke all on function public.complete_job(uuid, jsonb, text, jsonb, boolean, text) from public, anon, authenticated;
revoke all on function public.heartbeat_job(uuid, text, integer) from public, anon, authenticated;
revoke all on function public.release_job(uuid, text) from public, anon, authenticated;
revoke all on function public.requeue_stale_jobs() from public, anon, authenticated;
revoke all on function public.job_retry_delay(integer) from public, anon, authenticated;
revoke all on function public.cancel_generation(uuid) from public, anon;

grant execute on function public.enqueue_job(text, jsonb, integer, integer, timestamptz, text) to service_role;
grant execute on function public.claim_jobs(integer, text[], text, integer, boolean) to service_role;
grant execute on function public.claim_next_job(text[], text, integer) to service_role;
grant execute on function public.complete_job(uuid, jsonb, text, jsonb, boolean, text) to service_role;
grant execute on function public.heartbeat_job(uuid, text, integer) to service_role;
grant execute on function public.release_job(uuid, text) to service_role;
grant execute on function public.requeue_stale_jobs() to service_role;
grant execute on function public.job_retry_delay(integer) to service_role;
grant execute on function public.cancel_generation(uuid) to authenticated, service_role;
