-- Fewer round trips per generation (issue 15): RPCs that do in one transaction what took
-- the worker several calls, fenced and idempotent like complete_job. Idempotent file:
-- functions created or replaced, a column and an index added if missing, grants re-applied.
--
--   claim_work          claim_jobs + (generate-image) the generation marked processing and
--                       returned + (download-image) the generation returned + the earliest
--                       future scheduled_at (what next_scheduled_at answered)
--   complete_and_claim  complete_job (success) for one or more jobs + claim the next ones
--   finish_prediction   a finished prediction: the generation downloading, its download-image
--                       job enqueued (already claimed by the caller when p_chain), the job
--                       that saw it completed
--   store_image         the images row (which completes the generation, 20261201000300) +
--                       the download job completed + claim the next ones
--   heartbeat_worker    register_worker + the live workers (to share the provider request
--                       budget and to spread Realtime wake-ups without a herd)
--   prediction_stats    recent prediction durations per model (adaptive provider polling)
--
-- Fencing: every call that completes a job raises PW001 (lease lost), as complete_job with
-- a worker id does, unless the job is processing under that worker. Idempotency: the same
-- call repeated after its answer was lost (an in-process retry) finds the job completed
-- with a result containing the one it sends, and answers as the first call did instead of
-- raising PW001 (the worker puts its id and the attempt in every result it sends).
-- Lock order: a generation's row before its jobs' rows, as a cancel takes them (the
-- generation's update, then stop_generation_work on its jobs), so the two never deadlock;
-- claim_work, which holds the jobs it claims, only takes a generation that is not locked.

-- claim_jobs, planned once per session ----------------------------------------------------
-- Same arguments, same rows, same order as before (20261129000300). Its statement used to be
-- planned again at every call (plpgsql's custom plans: the generic plan of the old join
-- hash-joined the whole table under a backlog), which cost about 0.2 ms of the 0.3 ms a
-- one-job claim takes in the database. Written without a join (the picked ids are an array
-- computed once, an InitPlan: no rescan can lock more than p_limit rows), its generic plan
-- walks job_queue_claim_idx in claim order and stops at the limit whatever the backlog, so
-- it is planned once per session (tests/db/test_scale.py checks the plans at scale).
create or replace function public.claim_jobs(
  p_limit integer,
  p_job_types text[] default null,
  p_worker_id text default null,
  p_lease_seconds integer default 300,
  p_exclude_suspects boolean default false
) returns setof public.job_queue
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  return query
    with claimed as (
      update public.job_queue j
      set status = 'processing',
          attempt_number = j.attempt_number + 1,
          started_at = now(),
          locked_by = p_worker_id,
          locked_until = now() + make_interval(secs => greatest(coalesce(p_lease_seconds, 300), 1)),
          updated_at = now()
      where j.id = any (array(
          select c.id from public.job_queue c
          where c.status = 'pending'
            and c.scheduled_at <= now()
            and (p_job_types is null or c.job_type = any (p_job_types))
            -- Suspects: jobs whose last worker died holding them (requeue_stale_jobs marked
            -- them); a worker asks for them only when it is idle and runs them alone.
            and not (coalesce(p_exclude_suspects, false)
                     and coalesce(c.error_details ? 'lease_expired_at', false))
          order by c.priority desc, c.scheduled_at, c.created_at
          limit greatest(coalesce(p_limit, 1), 0)
          for update skip locked))
        and j.status = 'pending'
      returning j.*
    )
    select * from claimed c order by c.priority desc, c.scheduled_at, c.created_at;
end
$$;

comment on function public.claim_jobs(integer, text[], text, integer, boolean) is
  'Atomically claim up to p_limit due pending jobs (priority desc, scheduled_at, created_at) with FOR UPDATE SKIP LOCKED; each gets a lease of p_lease_seconds. With p_exclude_suspects, jobs whose last worker died holding them (error_details.lease_expired_at) are skipped: a busy worker leaves them to an idle one, which runs them alone.';

-- claim_next_job: plpgsql, so its call of claim_jobs is planned once per session too (a
-- `language sql` function with a SET clause is planned at every call).
create or replace function public.claim_next_job(
  p_job_types text[] default null,
  p_worker_id text default null,
  p_lease_seconds integer default 300
) returns setof public.job_queue
language plpgsql
security definer
set search_path = ''
as $$
begin
  return query select * from public.claim_jobs(1, p_job_types, p_worker_id, p_lease_seconds);
end
$$;

comment on function public.claim_next_job(text[], text, integer) is
  'claim_jobs(1, ...). Called with no arguments it behaves like the original (variant G).';

-- The registry learns each worker's job types (who may be woken for which job) ----------------
alter table public.job_workers add column if not exists job_types text[];
comment on column public.job_workers.job_types is
  'Job types the worker claims (WORKER_JOB_TYPES); null: all.';

-- Helpers ------------------------------------------------------------------------------------
create or replace function public.job_uuid(p_value text) returns uuid
language sql
immutable
set search_path = ''
as $$
  select case when p_value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
              then p_value::uuid end
$$;

comment on function public.job_uuid(text) is
  'A payload''s generation_id or user_id as a uuid, null when it is not one.';

create or replace function public.own_job(
  p_job_id uuid,
  p_worker_id text,
  p_result jsonb,
  out job public.job_queue,
  out replayed boolean
)
language plpgsql
security definer
set search_path = ''
as $$
begin
  replayed := false;
  select * into job from public.job_queue where id = p_job_id for update;
  if not found then
    raise exception 'job % not found', p_job_id using errcode = 'P0002';
  end if;
  if job.status = 'processing' and job.locked_by is not distinct from p_worker_id then
    return;
  end if;
  -- The same call again (its first answer was lost after the commit): answer, do not fence.
  if job.status = 'completed' and p_result is not null and p_result <> '{}'::jsonb
     and coalesce(job.result, '{}'::jsonb) @> p_result then
    replayed := true;
    return;
  end if;
  raise exception 'lease lost: job % is % (locked by %), not processing under worker %',
    p_job_id, job.status, coalesce(job.locked_by, 'nobody'), p_worker_id
    using errcode = 'PW001', hint = 'The job was requeued, cancelled or taken by another worker; do not report its outcome.';
end
$$;

comment on function public.own_job(uuid, text, jsonb) is
  'Lock a job the caller is finishing: it must be processing under p_worker_id (else PW001, as complete_job), or already completed with a result containing p_result (a repeated call: replayed).';

create or replace function public.work_items(p_jobs public.job_queue[], p_start boolean)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_job public.job_queue;
  v_gid uuid;
  v_gen public.image_generations;
  v_item jsonb;
  v_items jsonb := '[]'::jsonb;
begin
  foreach v_job in array coalesce(p_jobs, '{}') loop
    v_gid := public.job_uuid(v_job.payload ->> 'generation_id');
    v_item := to_jsonb(v_job);
    if v_gid is not null and v_job.job_type in ('generate-image', 'download-image') then
      v_gen := null;
      if p_start and v_job.job_type = 'generate-image' then
        -- What the generate-image handler wrote first: processing, and which job runs it.
        -- The claimed job is locked already: a generation locked by someone else (a
        -- cancel, which then wants this job) is skipped, not waited for.
        select * into v_gen from public.image_generations where id = v_gid
        for update skip locked;
        if v_gen.id is null then
          if exists (select 1 from public.image_generations where id = v_gid) then
            v_items := v_items || jsonb_build_array(v_item);  -- the handler reads it
            continue;
          end if;
        elsif v_gen.status in ('pending', 'queued', 'processing', 'downloading') then
          update public.image_generations set status = 'processing', job_id = v_job.id
          where id = v_gid
          returning * into v_gen;
        end if;
      else
        select * into v_gen from public.image_generations where id = v_gid;
      end if;
      v_item := v_item || jsonb_build_object(
        'generation', case when v_gen.id is null then null else to_jsonb(v_gen) end);
    end if;
    v_items := v_items || jsonb_build_array(v_item);
  end loop;
  return v_items;
end
$$;

comment on function public.work_items(public.job_queue[], boolean) is
  'Claimed jobs as the worker runs them, in order: each row, plus (generate-image, download-image) its generation under "generation" (null when deleted); with p_start a generate-image job''s generation becomes processing with job_id set, unless it is finished or locked by another transaction (then no "generation": the handler reads it).';

-- claim_work ---------------------------------------------------------------------------------
create or replace function public.claim_work(
  p_limit integer,
  p_job_types text[] default null,
  p_worker_id text default null,
  p_lease_seconds integer default 300,
  p_exclude_suspects boolean default false,
  p_suspect_alone boolean default false
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_jobs public.job_queue[] := '{}';
  v_more public.job_queue[];
  v_rest integer := greatest(coalesce(p_limit, 0), 0);
  v_exclude boolean := coalesce(p_exclude_suspects, false);
begin
  -- An idle worker (p_suspect_alone) takes the first due job even when it is a suspect
  -- (its last worker died holding it), and then nothing beside it: a job that kills its
  -- process takes no bystanders with it. Otherwise the rest come without suspects.
  if coalesce(p_suspect_alone, false) and not v_exclude and v_rest > 1 then
    select coalesce(array_agg(c), '{}') into v_jobs
    from public.claim_jobs(1, p_job_types, p_worker_id, p_lease_seconds, false) c;
    v_rest := case
      when cardinality(v_jobs) = 0 then 0  -- nothing was due
      when coalesce((v_jobs[1]).error_details ? 'lease_expired_at', false) then 0
      else v_rest - 1 end;
    v_exclude := true;
  end if;
  if v_rest > 0 then
    select coalesce(array_agg(c order by c.priority desc, c.scheduled_at, c.created_at), '{}')
    into v_more
    from public.claim_jobs(v_rest, p_job_types, p_worker_id, p_lease_seconds, v_exclude) c;
    v_jobs := v_jobs || v_more;
  end if;
  return jsonb_build_object(
    'jobs', public.work_items(v_jobs, true),
    -- Only when it found less than it asked for: the caller then sleeps until this time.
    'next_at', case when cardinality(v_jobs) < coalesce(p_limit, 0) or coalesce(p_limit, 0) = 0
                    then public.next_scheduled_at(p_job_types) end);
end
$$;

comment on function public.claim_work(integer, text[], text, integer, boolean, boolean) is
  'claim_jobs for the daemon, in one call: {"jobs": [job row + "generation"], "next_at"}. With p_suspect_alone (an idle worker), a suspect first in line comes alone and the rest without suspects. A claimed generate-image job''s generation becomes processing (job_id set) unless it is finished, and comes back with the job, as does a download-image job''s (work_items); next_at is next_scheduled_at(p_job_types) when fewer than p_limit jobs were due.';

-- complete_and_claim -------------------------------------------------------------------------
create or replace function public.complete_and_claim(
  p_job_ids uuid[],
  p_worker_id text,
  p_results jsonb default null,
  p_claim integer default 0,
  p_job_types text[] default null,
  p_lease_seconds integer default 300,
  p_exclude_suspects boolean default true
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_count integer;
  v_id uuid;
begin
  if p_worker_id is null then
    raise exception 'complete_and_claim needs p_worker_id (it is fenced)' using errcode = '22004';
  end if;
  -- One statement for every job (rows locked in id order: two callers completing
  -- overlapping sets cannot deadlock), fenced: only jobs processing under this worker.
  update public.job_queue j
  set status = 'completed',
      result = case when jsonb_typeof(p_results) = 'array'
                    then p_results -> (array_position(p_job_ids, j.id) - 1)
                    else p_results end,
      completed_at = now(), locked_by = null, locked_until = null
  where j.id = any (p_job_ids) and j.status = 'processing' and j.locked_by = p_worker_id;
  get diagnostics v_count = row_count;
  if v_count < coalesce(cardinality(p_job_ids), 0) then
    -- Not all ours: a repeat of this call (its answer lost) passes, anything else raises
    -- PW001 and nothing of this call is kept.
    foreach v_id in array p_job_ids loop
      perform public.own_job(v_id, p_worker_id, case when jsonb_typeof(p_results) = 'array'
        then p_results -> (array_position(p_job_ids, v_id) - 1) else p_results end);
    end loop;
  end if;
  return public.claim_work(greatest(coalesce(p_claim, 0), 0), p_job_types, p_worker_id,
                           p_lease_seconds, p_exclude_suspects);
end
$$;

comment on function public.complete_and_claim(uuid[], text, jsonb, integer, text[], integer, boolean) is
  'complete_job (success, fenced by p_worker_id: PW001) for each of p_job_ids, p_results one result for all or a JSON array (one per id), then claim_work(p_claim, ...) in the same transaction: {"jobs": [...], "next_at"}. A repeated call whose jobs are already completed with these results answers again instead of raising PW001.';

-- finish_prediction --------------------------------------------------------------------------
create or replace function public.finish_prediction(
  p_job_id uuid,
  p_worker_id text,
  p_generation_id uuid,
  p_prediction_id text,
  p_generation_time numeric,
  p_download jsonb,
  p_result jsonb,
  p_chain boolean default false,
  p_lease_seconds integer default 300
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_own record;
  v_gen public.image_generations;
  v_key text := 'download:' || p_generation_id::text;
  v_download public.job_queue;
  v_user uuid;
  v_chained boolean := false;
begin
  if p_worker_id is null then
    raise exception 'finish_prediction needs p_worker_id (it is fenced)' using errcode = '22004';
  end if;
  select * into v_gen from public.image_generations where id = p_generation_id for update;
  select * into v_own from public.own_job(p_job_id, p_worker_id, p_result);
  if v_own.replayed then
    select * into v_download from public.job_queue
    where id = public.job_uuid((v_own.job).result ->> 'download_job_id');
    return jsonb_build_object(
      'replayed', true,
      'download_job_id', v_download.id,
      'generation_status', v_gen.status,
      'jobs', case when v_download.status = 'processing' and v_download.locked_by = p_worker_id
                   then public.work_items(array[v_download], false)
                   else '[]'::jsonb end);
  end if;

  if v_gen.id is null or v_gen.status in ('completed', 'failed', 'cancelled') then
    -- Given up or done meanwhile: no download. (A cancel also cancels the job, which the
    -- fence above reports as PW001.)
    update public.job_queue
    set status = 'completed', completed_at = now(), locked_by = null, locked_until = null,
        result = p_result || jsonb_build_object(
          'skipped', 'generation ' || coalesce(v_gen.status, 'deleted'))
    where id = p_job_id;
    return jsonb_build_object('download_job_id', null,
                              'generation_status', coalesce(v_gen.status, 'deleted'),
                              'jobs', '[]'::jsonb);
  end if;

  update public.image_generations
  set status = 'downloading',
      replicate_prediction_id = p_prediction_id,
      generation_time_seconds = coalesce(p_generation_time, generation_time_seconds)
  where id = p_generation_id
  returning * into v_gen;

  -- enqueue_job's rules for the download (one live job per generation; created_by the
  -- payload's user when that user exists), inserted already claimed when p_chain: the
  -- caller runs it next, so its Realtime INSERT wakes no other worker.
  select u.id into v_user from auth.users u
  where u.id = public.job_uuid(coalesce(p_download ->> 'user_id', v_gen.user_id::text));
  insert into public.job_queue as j (job_type, payload, priority, max_attempts, created_by,
                                     dedupe_key, status, attempt_number, started_at, locked_by,
                                     locked_until)
  values ('download-image', coalesce(p_download, '{}'::jsonb), 1, 3, v_user, v_key,
          case when p_chain then 'processing' else 'pending' end,
          case when p_chain then 1 else 0 end,
          case when p_chain then now() end,
          case when p_chain then p_worker_id end,
          case when p_chain then now() + make_interval(secs => greatest(coalesce(p_lease_seconds, 300), 1)) end)
  on conflict (dedupe_key) where dedupe_key is not null and status in ('pending', 'processing')
  do nothing
  returning * into v_download;
  if v_download.id is null then
    select * into v_download from public.job_queue
    where dedupe_key = v_key and status in ('pending', 'processing');
  else
    v_chained := coalesce(p_chain, false);
  end if;

  update public.job_queue
  set status = 'completed', completed_at = now(), locked_by = null, locked_until = null,
      result = p_result || jsonb_build_object('download_job_id', v_download.id)
  where id = p_job_id;

  return jsonb_build_object(
    'download_job_id', v_download.id,
    'generation_status', v_gen.status,
    'jobs', case when v_chained
                 then jsonb_build_array(to_jsonb(v_download)
                                        || jsonb_build_object('generation', to_jsonb(v_gen)))
                 else '[]'::jsonb end);
end
$$;

comment on function public.finish_prediction(uuid, text, uuid, text, numeric, jsonb, jsonb, boolean, integer) is
  'A prediction succeeded, in one transaction: the generation becomes downloading (prediction id, generation_time_seconds), its download-image job is enqueued (priority 1, dedupe key download:<generation_id>; with p_chain inserted already processing under p_worker_id, returned under "jobs" for the caller to run) and the job p_job_id (generate-image or process-webhook, fenced: PW001) completes with p_result + download_job_id. A generation finished or deleted meanwhile gets no download. Answers {"download_job_id", "generation_status", "jobs"}.';

-- store_image --------------------------------------------------------------------------------
create or replace function public.store_image(
  p_job_id uuid,
  p_worker_id text,
  p_image jsonb,
  p_result jsonb,
  p_claim integer default 0,
  p_job_types text[] default null,
  p_lease_seconds integer default 300
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_own record;
  v_new public.images := jsonb_populate_record(null::public.images, p_image);
  v_image public.images;
  v_reused boolean := false;
begin
  if p_worker_id is null then
    raise exception 'store_image needs p_worker_id (it is fenced)' using errcode = '22004';
  end if;
  if v_new.generation_id is null then
    raise exception 'store_image: p_image.generation_id is required' using errcode = '22023';
  end if;
  -- The generation first (the images row's triggers lock it), then the job.
  select * into v_image from public.images
  where generation_id = v_new.generation_id order by created_at limit 1;
  if v_image.id is null then
    -- images_10_generation_wanted refuses it (PT410) for a cancelled, failed or deleted
    -- generation; images_20_complete_generation completes the generation.
    insert into public.images (generation_id, user_id, filename, storage_path, public_url,
                               file_size, width, height, format, prompt, negative_prompt, model)
    values (v_new.generation_id, v_new.user_id, v_new.filename, v_new.storage_path,
            v_new.public_url, v_new.file_size, v_new.width, v_new.height, v_new.format,
            v_new.prompt, v_new.negative_prompt, v_new.model)
    on conflict do nothing
    returning * into v_image;
    if v_image.id is null then
      select * into v_image from public.images
      where generation_id = v_new.generation_id order by created_at limit 1;
      v_reused := true;
    end if;
  else
    v_reused := true;
    update public.image_generations
    set status = 'completed', completed_at = now(), error_message = null
    where id = v_new.generation_id
      and status in ('pending', 'queued', 'processing', 'downloading');
  end if;
  select * into v_own from public.own_job(p_job_id, p_worker_id, p_result);
  if v_own.replayed then
    return jsonb_build_object('image', to_jsonb(v_image), 'reused', true, 'replayed', true,
                              'jobs', '[]'::jsonb, 'next_at', null);
  end if;
  update public.job_queue
  set status = 'completed', completed_at = now(), locked_by = null, locked_until = null,
      result = p_result || jsonb_build_object('image_id', v_image.id, 'reused', v_reused)
  where id = p_job_id;
  return public.claim_work(greatest(coalesce(p_claim, 0), 0), p_job_types, p_worker_id,
                           p_lease_seconds, true)
         || jsonb_build_object('image', to_jsonb(v_image), 'reused', v_reused);
end
$$;

comment on function public.store_image(uuid, text, jsonb, jsonb, integer, text[], integer) is
  'A downloaded image, in one transaction: the images row (a generation''s existing image is reused; PT410 when the generation was cancelled, failed or deleted: nothing is written), which completes the generation; the download job p_job_id completed (fenced: PW001) with p_result + image_id; then claim_work(p_claim, ...) without suspects. Answers {"image", "reused", "jobs", "next_at"}.';

-- heartbeat_worker ---------------------------------------------------------------------------
create or replace function public.heartbeat_worker(
  p_worker_id text,
  p_hostname text default null,
  p_version text default null,
  p_concurrency integer default null,
  p_in_flight integer default 0,
  p_jobs_done bigint default 0,
  p_jobs_failed bigint default 0,
  p_realtime_connected boolean default null,
  p_mode text default null,
  p_stopped boolean default false,
  p_job_types text[] default null,
  p_live_seconds integer default 60
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.register_worker(p_worker_id, p_hostname, p_version, p_concurrency, p_in_flight,
                                 p_jobs_done, p_jobs_failed, p_realtime_connected, p_mode,
                                 p_stopped);
  update public.job_workers set job_types = p_job_types where worker_id = p_worker_id;
  return coalesce((
    select jsonb_agg(jsonb_build_object(
             'worker_id', w.worker_id, 'mode', w.mode, 'concurrency', w.concurrency,
             'in_flight', w.in_flight, 'realtime_connected', w.realtime_connected,
             'job_types', w.job_types)
           order by w.worker_id)
    from public.job_workers w
    where w.stopped_at is null
      and w.last_seen_at > now() - make_interval(secs => greatest(coalesce(p_live_seconds, 60), 1))
  ), '[]'::jsonb);
end
$$;

comment on function public.heartbeat_worker(text, text, text, integer, integer, bigint, bigint, boolean, text, boolean, text[], integer) is
  'register_worker plus the worker''s job types, answering the live workers (not stopped, seen within p_live_seconds): [{"worker_id", "mode", "concurrency", "in_flight", "realtime_connected", "job_types"}]. Workers share the provider request budget and spread Realtime wake-ups over this list.';

-- prediction_stats ---------------------------------------------------------------------------
create or replace function public.prediction_stats(
  p_hours integer default 24,
  p_per_model integer default 200
) returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  -- job_queue_finished_idx (status, completed_at) keeps this to the window's rows.
  with recent as (
    select j.payload ->> 'model_id' as model_id,
           (j.result ->> 'provider_seconds')::double precision as seconds,
           row_number() over (partition by j.payload ->> 'model_id'
                              order by j.completed_at desc) as n
    from public.job_queue j
    where j.status = 'completed'
      and j.completed_at > now() - make_interval(hours => greatest(coalesce(p_hours, 24), 1))
      and j.job_type = 'generate-image'
      and jsonb_typeof(j.result -> 'provider_seconds') = 'number'
      and j.payload ->> 'model_id' is not null
  )
  select coalesce(jsonb_object_agg(model_id, stats), '{}'::jsonb)
  from (
    select model_id, jsonb_build_object(
             'n', count(*),
             'p05', percentile_cont(0.05) within group (order by seconds),
             'p50', percentile_cont(0.5) within group (order by seconds),
             'p95', percentile_cont(0.95) within group (order by seconds),
             'max', max(seconds)) as stats
    from recent
    where n <= greatest(coalesce(p_per_model, 200), 1)
    group by model_id
  ) s
$$;

comment on function public.prediction_stats(integer, integer) is
  'Recent prediction durations per model (created to completed as the provider reports them; result.provider_seconds of completed generate-image jobs in the last p_hours, the latest p_per_model per model): {model_id: {"n", "p05", "p50", "p95", "max"}}. The worker polls Replicate densely around these.';

-- Grants: the worker (service_role) only. ------------------------------------------------------
revoke all on function public.job_uuid(text) from public, anon, authenticated;
revoke all on function public.own_job(uuid, text, jsonb) from public, anon, authenticated;
revoke all on function public.work_items(public.job_queue[], boolean) from public, anon, authenticated;
revoke all on function public.claim_work(integer, text[], text, integer, boolean, boolean) from public, anon, authenticated;
revoke all on function public.complete_and_claim(uuid[], text, jsonb, integer, text[], integer, boolean) from public, anon, authenticated;
revoke all on function public.finish_prediction(uuid, text, uuid, text, numeric, jsonb, jsonb, boolean, integer) from public, anon, authenticated;
revoke all on function public.store_image(uuid, text, jsonb, jsonb, integer, text[], integer) from public, anon, authenticated;
revoke all on function public.heartbeat_worker(text, text, text, integer, integer, bigint, bigint, boolean, text, boolean, text[], integer) from public, anon, authenticated;
revoke all on function public.prediction_stats(integer, integer) from public, anon, authenticated;

grant execute on function public.claim_work(integer, text[], text, integer, boolean, boolean) to service_role;
grant execute on function public.complete_and_claim(uuid[], text, jsonb, integer, text[], integer, boolean) to service_role;
grant execute on function public.finish_prediction(uuid, text, uuid, text, numeric, jsonb, jsonb, boolean, integer) to service_role;
grant execute on function public.store_image(uuid, text, jsonb, jsonb, integer, text[], integer) to service_role;
grant execute on function public.heartbeat_worker(text, text, text, integer, integer, bigint, bigint, boolean, text, boolean, text[], integer) to service_role;
grant execute on function public.prediction_stats(integer, integer) to service_role;
