-- The monitoring views with their original columns first (the shared client library and
-- the dashboard queries read them by these names); the columns 20261129000500 added follow.
-- Every view runs with the caller's rights (security_invoker): the service role and the
-- dashboard see every job, a signed-in user only their own (RLS on job_queue).
-- Idempotent: the views are dropped and re-created (a view's columns cannot be renamed in
-- place), grants and comments re-applied.
--
-- Note for whoever re-runs every migration file on a migrated database: this file renames
-- view columns, which 20261129000500's CREATE OR REPLACE VIEW cannot follow; that file
-- is the one not to re-run (tests/db/dbkit.py RERUN_SKIPS).

drop view if exists public.queue_health;
create view public.queue_health with (security_invoker = true) as
select job_type,
       status,
       count(*) as count,
       min(created_at) as oldest_job,
       max(created_at) as newest_job,
       round(avg(extract(epoch from (completed_at - started_at)))
             filter (where completed_at is not null and started_at is not null)::numeric, 3) as avg_duration_seconds,
       round(avg(attempt_number)::numeric, 2) as avg_attempts
from public.job_queue
group by job_type, status;

drop view if exists public.failed_jobs_recent;
create view public.failed_jobs_recent with (security_invoker = true) as
select id,
       job_type,
       payload,
       attempt_number as attempts,
       error_message,
       created_at,
       completed_at,
       payload ->> 'generation_id' as generation_id,
       attempt_number,
       max_attempts,
       error_details
from public.job_queue
where status = 'failed' and completed_at > now() - interval '24 hours'
order by completed_at desc;

drop view if exists public.stuck_jobs;
create view public.stuck_jobs with (security_invoker = true) as
select id,
       job_type,
       payload,
       started_at,
       round(extract(epoch from (now() - coalesce(started_at, updated_at))) / 60.0, 1) as minutes_stuck,
       payload ->> 'generation_id' as generation_id,
       locked_by,
       locked_until,
       attempt_number,
       max_attempts,
       round(extract(epoch from (now() - coalesce(locked_until, updated_at)))::numeric, 1) as seconds_past_lease
from public.job_queue
where status = 'processing'
  and ((locked_until is not null and locked_until < now())
       or (locked_until is null and updated_at < now() - interval '15 minutes'));

revoke all on public.queue_health, public.failed_jobs_recent, public.stuck_jobs from public, anon, authenticated;
grant select on public.queue_health, public.failed_jobs_recent, public.stuck_jobs to service_role;
-- The client library reads them as a signed-in user: RLS shows them their own jobs only.
grant select on public.queue_health, public.failed_jobs_recent, public.stuck_jobs to authenticated;

comment on view public.queue_health is
  'Per job_type and status: count, oldest_job, newest_job (created_at), avg_duration_seconds, avg_attempts. A user sees their own jobs only.';
comment on view public.failed_jobs_recent is
  'Jobs failed in the last 24 hours, newest first (attempts = attempt_number). A user sees their own jobs only.';
comment on view public.stuck_jobs is
  'Jobs processing past their lease (requeue_stale_jobs will pick them up); minutes_stuck counts from when the attempt started. A user sees their own jobs only.';
