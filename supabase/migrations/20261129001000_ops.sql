-- Operator RPCs behind `picture-worker retry` (service_role only). Idempotent: the function
-- is replaced, the grants are re-applied.

create or replace function public.retry_jobs(
  p_job_id uuid default null,
  p_job_type text default null,
  p_limit integer default 1000,
  p_include_cancelled boolean default false
) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_statuses text[] := case when coalesce(p_include_cancelled, false)
                            then array['failed', 'cancelled'] else array['failed'] end;
  v_job record;
  v_generation uuid;
  v_count integer := 0;
begin
  if p_job_id is not null
     and not exists (select 1 from public.job_queue where id = p_job_id) then
    raise exception 'job % not found', p_job_id using errcode = 'P0002';
  end if;
  for v_job in
    select j.id, j.dedupe_key, j.payload ->> 'generation_id' as generation_id
    from public.job_queue j
    where j.status = any (v_statuses)
      and (p_job_id is null or j.id = p_job_id)
      and (p_job_type is null or j.job_type = p_job_type)
    order by coalesce(j.completed_at, j.updated_at), j.created_at
    limit greatest(coalesce(p_limit, 1000), 0)
    for update skip locked
  loop
    -- A dedupe key allows one live job: skip a job whose key is live again (a newer job,
    -- or an older failure of the same key retried earlier in this loop).
    if v_job.dedupe_key is not null and exists (
         select 1 from public.job_queue l
         where l.dedupe_key = v_job.dedupe_key and l.status in ('pending', 'processing')) then
      continue;
    end if;
    update public.job_queue
    set status = 'pending', attempt_number = 0, scheduled_at = now(), started_at = null,
        completed_at = null, locked_by = null, locked_until = null, result = null
    where id = v_job.id;
    v_generation := case
      when v_job.generation_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
      then v_job.generation_id::uuid
    end;
    if v_generation is not null then
      update public.image_generations
      set status = 'queued', completed_at = null
      where id = v_generation
        and status = any (v_statuses);
    end if;
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

revoke all on function public.retry_jobs(uuid, text, integer, boolean) from public, anon, authenticated;
grant execute on function public.retry_jobs(uuid, text, integer, boolean) to service_role;

comment on function public.retry_jobs(uuid, text, integer, boolean) is
  'Operator retry: failed jobs (and cancelled ones with p_include_cancelled) go back to pending, due now, attempts reset; their generations back to queued. One job by id (raises P0002 if unknown), or up to p_limit of one job_type (all types when null), oldest first. Returns how many were requeued.';
