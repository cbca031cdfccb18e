-- Claims whose answer was lost. claim_jobs commits, then its HTTP answer can be lost (the
-- connection drops, the gateway answers 502/504 after the upstream committed): the worker
-- never learns the jobs, which would sit `processing` under its id, an attempt spent, until
-- their lease expires. After a failed claim the worker hands back every job it holds but
-- does not know (the ones it is running are p_known): each goes back to pending at once,
-- its lease freed and its attempt given back, exactly as release_job does.
-- Idempotent: the function is replaced, its grants re-applied.

create or replace function public.release_lost_claims(
  p_worker_id text,
  p_known uuid[] default '{}'
) returns setof public.job_queue
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
  where status = 'processing'
    and locked_by = p_worker_id
    and p_worker_id is not null
    and not (id = any (coalesce(p_known, '{}'::uuid[])))
  returning *
$$;

comment on function public.release_lost_claims(text, uuid[]) is
  'A worker whose claim failed hands back the jobs it holds (status processing, locked_by = p_worker_id) but is not running (not in p_known): a claim whose answer was lost. Each goes back to pending with its attempt given back. Returns the released rows.';

revoke all on function public.release_lost_claims(text, uuid[]) from public, anon, authenticated;
grant execute on function public.release_lost_claims(text, uuid[]) to service_role;
