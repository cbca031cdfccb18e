-- Maintenance functions and their pg_cron schedules (when pg_cron is available).

create or replace function public.fail_abandoned_generations() returns integer
language sql
security definer
set search_path = ''
as $$
  with abandoned as (
    update public.image_generations g
    set status = 'failed',
        error_message = 'The generation was abandoned: no job made progress on it for 30 minutes.'
    where g.status in ('processing', 'downloading')
      and g.updated_at < now() - interval '30 minutes'
      and not exists (
        select 1 from public.job_queue j
        where j.payload ->> 'generation_id' = g.id::text
          and j.status in ('pending', 'processing')
      )
    returning 1
  )
  select count(*)::integer from abandoned
$$;

create or replace function public.cleanup_old_jobs() returns integer
language sql
security definer
set search_path = ''
as $$
  with gone as (
    -- A row finished by hand (the old system had no cancel RPC) may lack completed_at;
    -- its last change then dates it, or it would be kept forever.
    delete from public.job_queue
    where (status in ('completed', 'cancelled')
           and coalesce(completed_at, updated_at) < now() - interval '7 days')
       or (status = 'failed' and coalesce(completed_at, updated_at) < now() - interval '30 days')
    returning 1
  )
  select count(*)::integer from gone
$$;

revoke all on function public.fail_abandoned_generations() from public, anon, authenticated;
revoke all on function public.cleanup_old_jobs() from public, anon, authenticated;
grant execute on function public.fail_abandoned_generations() to service_role;
grant execute on function public.cleanup_old_jobs() to service_role;

comment on function public.fail_abandoned_generations() is
  'Generations stuck in processing or downloading with no live job for 30 minutes become failed.';
comment on function public.cleanup_old_jobs() is
  'Delete completed and cancelled jobs finished more than 7 days ago and failed jobs finished more than 30 days ago (completed_at, else updated_at).';

do $$
begin
  if not exists (select 1 from pg_extension where extname = 'pg_cron') then
    raise notice 'pg_cron is not installed: schedules skipped (the worker also calls requeue_stale_jobs every minute)';
    return;
  end if;
  -- The legacy schedules POSTed to the edge function with a service key pasted into SQL;
  -- the daemon replaces them.
  perform cron.unschedule(jobid) from cron.job
    where jobname in ('process-jobs-worker', 'process-job-queue');
  perform cron.schedule('requeue-stale-jobs', '* * * * *', 'select public.requeue_stale_jobs()');
  perform cron.schedule('fail-abandoned-generations', '*/5 * * * *', 'select public.fail_abandoned_generations()');
  perform cron.schedule('cleanup-old-jobs', '17 3 * * *', 'select public.cleanup_old_jobs()');
  perform cron.schedule('cleanup-cron-history', '27 3 * * *',
    $cmd$delete from cron.job_run_details where end_time < now() - interval '7 days'$cmd$);
end $$;
