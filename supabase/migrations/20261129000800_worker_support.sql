-- What the daemon needs beyond the queue RPCs: when the next retry is due.

create index if not exists job_queue_pending_scheduled_idx
  on public.job_queue (scheduled_at)
  where status = 'pending';

create or replace function public.next_scheduled_at(p_job_types text[] default null)
returns timestamptz
language sql
stable
security definer
set search_path = ''
as $$
  select min(j.scheduled_at)
  from public.job_queue j
  where j.status = 'pending'
    and j.scheduled_at > now()
    and (p_job_types is null or j.job_type = any (p_job_types))
$$;

revoke all on function public.next_scheduled_at(text[]) from public, anon, authenticated;
grant execute on function public.next_scheduled_at(text[]) to service_role;
comment on function public.next_scheduled_at(text[]) is
  'Earliest future scheduled_at of a pending job (the daemon sleeps until then instead of polling).';
