-- Monitoring for the Supabase dashboard: worker registry, queue views.

create table if not exists public.job_workers (
  worker_id text primary key,
  hostname text,
  version text,
  mode text,
  concurrency integer,
  in_flight integer not null default 0,
  jobs_done bigint not null default 0,
  jobs_failed bigint not null default 0,
  realtime_connected boolean,
  started_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  stopped_at timestamptz
);
alter table public.job_workers enable row level security;
revoke all on public.job_workers from anon, authenticated;
grant all on public.job_workers to service_role;

comment on table public.job_workers is
  'One row per worker process, upserted at start and on every heartbeat (about every 15 s). A worker whose last_seen_at is older than a minute is gone.';
comment on column public.job_workers.in_flight is 'Jobs the worker was running at its last heartbeat.';
comment on column public.job_workers.realtime_connected is 'Whether its Realtime subscription was live at its last heartbeat (false: it is polling).';
comment on column public.job_workers.worker_id is 'Worker id, the locked_by of the jobs it holds.';
comment on column public.job_workers.hostname is 'Host (or container) the worker runs on.';
comment on column public.job_workers.version is 'Worker software version.';
comment on column public.job_workers.mode is 'How the worker runs (e.g. daemon, once).';
comment on column public.job_workers.concurrency is 'Size of its job thread pool.';
comment on column public.job_workers.jobs_done is 'Jobs it completed since it started.';
comment on column public.job_workers.jobs_failed is 'Jobs it reported as failed since it started.';
comment on column public.job_workers.started_at is 'When the worker process registered.';
comment on column public.job_workers.last_seen_at is 'Its last heartbeat.';
comment on column public.job_workers.stopped_at is 'Set when it exited cleanly; null while it runs (or if it died).';

create or replace function public.register_worker(
  p_worker_id text,
  p_hostname text default null,
  p_version text default null,
  p_concurrency integer default null,
  p_in_flight integer default 0,
  p_jobs_done bigint default 0,
  p_jobs_failed bigint default 0,
  p_realtime_connected boolean default null,
  p_mode text default null,
  p_stopped boolean default false
) returns void
language sql
security definer
set search_path = ''
as $$
  insert into public.job_workers as w (worker_id, hostname, version, mode, concurrency, in_flight,
                                       jobs_done, jobs_failed, realtime_connected, stopped_at)
  values (p_worker_id, p_hostname, p_version, p_mode, p_concurrency, coalesce(p_in_flight, 0),
          coalesce(p_jobs_done, 0), coalesce(p_jobs_failed, 0), p_realtime_connected,
          case when p_stopped then now() end)
  on conflict (worker_id) do update
  set hostname = coalesce(excluded.hostname, w.hostname),
      version = coalesce(excluded.version, w.version),
      mode = coalesce(excluded.mode, w.mode),
      concurrency = coalesce(excluded.concurrency, w.concurrency),
      in_flight = excluded.in_flight,
      jobs_done = excluded.jobs_done,
      jobs_failed = excluded.jobs_failed,
      realtime_connected = excluded.realtime_connected,
      last_seen_at = now(),
      stopped_at = excluded.stopped_at
$$;
revoke all on function public.register_worker(text, text, text, integer, integer, bigint, bigint, boolean, text, boolean) from public, anon, authenticated;
grant execute on function public.register_worker(text, text, text, integer, integer, bigint, bigint, boolean, text, boolean) to service_role;
comment on function public.register_worker(text, text, text, integer, integer, bigint, bigint, boolean, text, boolean) is
  'Worker registry upsert (start, heartbeat, and p_stopped => true on exit).';

-- Views run with the caller's rights (security_invoker) so RLS applies: the dashboard
-- (postgres) and service_role see everything, a signed-in user only their own jobs.
create or replace view public.queue_health with (security_invoker = true) as
select job_type,
       status,
       count(*) as job_count,
       min(created_at) as oldest,
       max(created_at) as newest,
       round(avg(extract(epoch from (completed_at - started_at)))
             filter (where completed_at is not null and started_at is not null)::numeric, 3) as avg_duration_seconds,
       round(avg(attempt_number)::numeric, 2) as avg_attempts
from public.job_queue
group by job_type, status;

create or replace view public.queue_summary with (security_invoker = true) as
select count(*) filter (where status = 'pending') as pending,
       count(*) filter (where status = 'pending' and scheduled_at <= now()) as pending_due,
       count(*) filter (where status = 'processing') as processing,
       count(*) filter (where status = 'completed' and completed_at > now() - interval '1 hour') as completed_last_hour,
       count(*) filter (where status = 'failed' and completed_at > now() - interval '1 hour') as failed_last_hour,
       round(avg(extract(epoch from (completed_at - started_at)))
             filter (where status = 'completed' and completed_at > now() - interval '1 hour')::numeric, 3)
         as avg_processing_seconds,
       round(extract(epoch from (now() - min(scheduled_at) filter (where status = 'pending' and scheduled_at <= now())))::numeric, 3)
         as oldest_due_wait_seconds
from public.job_queue;

create or replace view public.failed_jobs_recent with (security_invoker = true) as
select id, job_type, payload ->> 'generation_id' as generation_id, attempt_number, max_attempts,
       error_message, error_details, created_at, completed_at
from public.job_queue
where status = 'failed' and completed_at > now() - interval '24 hours'
order by completed_at desc;

create or replace view public.stuck_jobs with (security_invoker = true) as
select id, job_type, payload ->> 'generation_id' as generation_id, locked_by, locked_until,
       attempt_number, max_attempts, started_at,
       round(extract(epoch from (now() - coalesce(locked_until, updated_at)))::numeric, 1) as seconds_past_lease
from public.job_queue
where status = 'processing'
  and ((locked_until is not null and locked_until < now())
       or (locked_until is null and updated_at < now() - interval '15 minutes'));

create or replace view public.active_workers with (security_invoker = true) as
select worker_id, hostname, version, mode, concurrency, in_flight, jobs_done, jobs_failed,
       realtime_connected, started_at, last_seen_at,
       round(extract(epoch from (now() - last_seen_at))::numeric, 1) as seconds_since_seen
from public.job_workers
where stopped_at is null and last_seen_at > now() - interval '2 minutes'
order by started_at;

revoke all on public.queue_health, public.queue_summary, public.failed_jobs_recent,
  public.stuck_jobs, public.active_workers from anon, authenticated;
grant select on public.queue_health, public.queue_summary, public.failed_jobs_recent,
  public.stuck_jobs, public.active_workers to service_role;
-- These expose only the caller's own jobs (security_invoker + RLS on job_queue).
grant select on public.queue_summary, public.failed_jobs_recent to authenticated;

comment on view public.queue_health is 'Per job_type and status: count, oldest, newest, average duration and attempts.';
comment on view public.queue_summary is 'One row: pending, processing, completed and failed in the last hour, average processing seconds, oldest due wait.';
comment on view public.failed_jobs_recent is 'Jobs failed in the last 24 hours, newest first.';
comment on view public.stuck_jobs is 'Jobs processing past their lease (requeue_stale_jobs will pick them up).';
comment on view public.active_workers is 'Workers seen in the last two minutes.';
