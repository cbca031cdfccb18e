-- The job queue: creates it on an empty project, or upgrades variant M (attempts,
-- scheduled_at, error_details, created_by) and variant G (attempt_number, result, no
-- scheduled_at) in place to the union of both plus leases and dedupe keys.

create table if not exists public.job_queue (
  id uuid primary key default gen_random_uuid(),
  job_type text not null,
  payload jsonb not null default '{}'::jsonb,
  status text not null default 'pending',
  priority integer not null default 0,
  attempt_number integer not null default 0,
  max_attempts integer not null default 3,
  scheduled_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  result jsonb,
  error_message text,
  error_details jsonb,
  created_by uuid references auth.users (id) on delete set null,
  locked_by text,
  locked_until timestamptz,
  dedupe_key text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- Variant M called the attempt counter "attempts".
do $$
begin
  if exists (select 1 from information_schema.columns
             where table_schema = 'public' and table_name = 'job_queue' and column_name = 'attempts')
     and not exists (select 1 from information_schema.columns
             where table_schema = 'public' and table_name = 'job_queue' and column_name = 'attempt_number') then
    alter table public.job_queue rename column attempts to attempt_number;
  end if;
  -- Variant G had no scheduled_at: existing rows were due when they were created.
  if not exists (select 1 from information_schema.columns
                 where table_schema = 'public' and table_name = 'job_queue' and column_name = 'scheduled_at') then
    alter table public.job_queue add column scheduled_at timestamptz;
    update public.job_queue set scheduled_at = coalesce(created_at, now());
    alter table public.job_queue alter column scheduled_at set default now();
    alter table public.job_queue alter column scheduled_at set not null;
  end if;
  if not exists (select 1 from information_schema.columns
                 where table_schema = 'public' and table_name = 'job_queue' and column_name = 'created_by') then
    alter table public.job_queue add column created_by uuid references auth.users (id) on delete set null;
  end if;
end $$;

alter table public.job_queue add column if not exists priority integer not null default 0;
alter table public.job_queue add column if not exists attempt_number integer not null default 0;
alter table public.job_queue add column if not exists max_attempts integer not null default 3;
alter table public.job_queue add column if not exists started_at timestamptz;
alter table public.job_queue add column if not exists completed_at timestamptz;
alter table public.job_queue add column if not exists result jsonb;
alter table public.job_queue add column if not exists error_message text;
alter table public.job_queue add column if not exists error_details jsonb;
alter table public.job_queue add column if not exists locked_by text;
alter table public.job_queue add column if not exists locked_until timestamptz;
alter table public.job_queue add column if not exists dedupe_key text;
alter table public.job_queue add column if not exists created_at timestamptz not null default now();
alter table public.job_queue add column if not exists updated_at timestamptz not null default now();

-- The deployed variants declared the counters and timestamps nullable and some without the
-- target defaults: fill the gaps, then constrain, so an upgraded table equals a fresh one.
-- Only columns that are still nullable are touched, so a rerun scans nothing.
do $$
declare
  c record;
begin
  for c in
    select v.col, v.fill
    from (values
      (1, 'payload', $f$'{}'::jsonb$f$),
      (2, 'status', $f$'pending'$f$),
      (3, 'priority', '0'),
      (4, 'attempt_number', '0'),
      (5, 'max_attempts', '3'),
      (6, 'created_at', 'now()'),
      (7, 'scheduled_at', 'created_at'),
      (8, 'updated_at', 'created_at')
    ) as v(ord, col, fill)
    join pg_attribute a
      on a.attrelid = 'public.job_queue'::regclass and a.attname = v.col
     and not a.attisdropped and not a.attnotnull
    order by v.ord
  loop
    execute format('update public.job_queue set %I = %s where %I is null', c.col, c.fill, c.col);
    execute format('alter table public.job_queue alter column %I set not null', c.col);
  end loop;
end $$;

alter table public.job_queue
  alter column id set default gen_random_uuid(),
  alter column payload set default '{}'::jsonb,
  alter column status set default 'pending',
  alter column priority set default 0,
  alter column attempt_number set default 0,
  alter column max_attempts set default 3,
  alter column scheduled_at set default now(),
  alter column created_at set default now(),
  alter column updated_at set default now();

-- Replace the old status / job_type checks with the target sets.
do $$
declare
  c record;
begin
  for c in
    select conname from pg_constraint
    where conrelid = 'public.job_queue'::regclass and contype = 'c'
      and (pg_get_constraintdef(oid) ilike '%status%' or pg_get_constraintdef(oid) ilike '%job_type%')
      and conname not in ('job_queue_status_check_v2', 'job_queue_job_type_check_v2')
  loop
    execute format('alter table public.job_queue drop constraint %I', c.conname);
  end loop;
  if not exists (select 1 from pg_constraint where conname = 'job_queue_status_check_v2') then
    alter table public.job_queue add constraint job_queue_status_check_v2
      check (status in ('pending', 'processing', 'completed', 'failed', 'cancelled'));
  end if;
  if not exists (select 1 from pg_constraint where conname = 'job_queue_job_type_check_v2') then
    alter table public.job_queue add constraint job_queue_job_type_check_v2
      check (job_type in ('generate-image', 'download-image', 'process-webhook', 'cleanup-storage'));
  end if;
end $$;

-- Claiming scans only pending rows in claim order; requeueing scans only processing rows.
-- Both stay index scans however much finished history the table holds.
create index if not exists job_queue_claim_idx
  on public.job_queue (priority desc, scheduled_at, created_at)
  where status = 'pending';
create index if not exists job_queue_lease_idx
  on public.job_queue (locked_until)
  where status = 'processing';
create index if not exists job_queue_generation_live_idx
  on public.job_queue ((payload ->> 'generation_id'))
  where status in ('pending', 'processing');
create unique index if not exists job_queue_dedupe_live_key
  on public.job_queue (dedupe_key)
  where dedupe_key is not null and status in ('pending', 'processing');
create index if not exists job_queue_finished_idx
  on public.job_queue (status, completed_at)
  where status in ('completed', 'failed', 'cancelled');
create index if not exists job_queue_created_by_idx on public.job_queue (created_by);

-- A hot queue: vacuum and analyze early, leave room for HOT updates.
alter table public.job_queue set (
  fillfactor = 80,
  autovacuum_vacuum_scale_factor = 0.01,
  autovacuum_vacuum_threshold = 200,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_cost_delay = 1
);

drop trigger if exists set_updated_at on public.job_queue;
create trigger set_updated_at before update on public.job_queue
  for each row execute function public.set_updated_at();

comment on table public.job_queue is
  'Background jobs of the Picture worker. Claimed with FOR UPDATE SKIP LOCKED through claim_next_job / claim_jobs; a claim holds a lease (locked_by, locked_until) that the worker heartbeats.';
comment on column public.job_queue.job_type is 'generate-image | download-image | process-webhook | cleanup-storage';
comment on column public.job_queue.status is 'pending | processing | completed | failed | cancelled';
comment on column public.job_queue.priority is 'Higher runs first (download-image jobs use 1).';
comment on column public.job_queue.attempt_number is 'Incremented by each claim; a release on shutdown gives the attempt back.';
comment on column public.job_queue.scheduled_at is 'Not claimable before this time (delays and retry backoff).';
comment on column public.job_queue.locked_by is 'Worker id holding the lease.';
comment on column public.job_queue.locked_until is 'Lease expiry; past it, requeue_stale_jobs returns the job to pending (or failed when attempts are used up).';
comment on column public.job_queue.dedupe_key is 'At most one pending or processing job per key (e.g. download:<generation_id>).';
comment on column public.job_queue.created_by is 'The user the job works for (auth.uid() of the caller, else payload.user_id).';
comment on column public.job_queue.id is 'Job id, as returned by enqueue_job.';
comment on column public.job_queue.payload is 'Job input; its shape depends on job_type (generate-image and download-image carry generation_id and user_id).';
comment on column public.job_queue.max_attempts is 'Claims allowed in all; a failed attempt with attempts left is retried after a backoff, the last one fails the job.';
comment on column public.job_queue.started_at is 'When the current (or last) attempt was claimed.';
comment on column public.job_queue.completed_at is 'When the job became completed, failed or cancelled.';
comment on column public.job_queue.result is 'Handler output, set on success.';
comment on column public.job_queue.error_message is 'Last error; kept while a retry is pending, final when status = failed.';
comment on column public.job_queue.error_details is 'Structured detail of the last error (class, HTTP status, provider response).';
comment on column public.job_queue.created_at is 'When the job was enqueued.';
comment on column public.job_queue.updated_at is 'Last change (kept by trigger). A processing job without a lease counts as abandoned after 15 minutes without change.';
