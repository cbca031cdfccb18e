-- job_queue as the existing clients see it. Idempotent.
--
-- - Job rows expose the original attempt counter `attempts` (variant M's name) beside
--   attempt_number: a generated column, always equal, never written.
-- - The shared client library's cancelJob
--     update job_queue set status = 'cancelled', updated_at = now()
--     where id = $1 and status = 'pending'
--   works for the job's own user: a pending generate-image or download-image job of theirs
--   may become cancelled (nothing else: 42501); updated_at and completed_at take the
--   server's time. Its generation is cancelled with it, which stops the rest of its work
--   (generation_40_stop_work), so the generation neither hangs queued nor holds a slot of
--   the user's in-flight limit.

alter table public.job_queue
  add column if not exists attempts integer generated always as (attempt_number) stored;
comment on column public.job_queue.attempts is
  'The original name of the attempt counter (variant M, the shared client library): always equal to attempt_number.';

create or replace function public.apply_user_job_rules() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- Fired only for the API's user roles (the trigger's WHEN clause).
  if old.status is distinct from 'pending' or new.status is distinct from 'cancelled' then
    raise exception 'A user may only cancel their own pending job (status pending to cancelled, not % to %)',
      old.status, new.status
      using errcode = '42501';
  end if;
  new.updated_at := now();
  new.completed_at := now();
  new.locked_by := null;
  new.locked_until := null;
  return new;
end
$$;

comment on function public.apply_user_job_rules() is
  'BEFORE UPDATE trigger for users: only pending -> cancelled; updated_at and completed_at take the server''s time.';

create or replace function public.cancel_generation_of_job() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_generation text := new.payload ->> 'generation_id';
begin
  if new.job_type not in ('generate-image', 'download-image')
     or v_generation !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    return new;
  end if;
  update public.image_generations
  set status = 'cancelled', completed_at = now(),
      error_message = coalesce(error_message, 'Cancelled by the user.')
  where id = v_generation::uuid
    and user_id = new.created_by
    and status in ('pending', 'queued', 'processing', 'downloading');
  return new;
end
$$;

comment on function public.cancel_generation_of_job() is
  'AFTER UPDATE trigger for users: the generation of a job its user cancelled is cancelled too (and its other work stopped).';

drop trigger if exists job_10_user_rules on public.job_queue;
create trigger job_10_user_rules
  before update on public.job_queue
  for each row
  when (current_user in ('anon', 'authenticated'))
  execute function public.apply_user_job_rules();

drop trigger if exists job_20_cancel_generation on public.job_queue;
create trigger job_20_cancel_generation
  after update of status on public.job_queue
  for each row
  when (current_user in ('anon', 'authenticated')
        and old.status = 'pending' and new.status = 'cancelled')
  execute function public.cancel_generation_of_job();

revoke all on function public.apply_user_job_rules() from public, anon, authenticated;
revoke all on function public.cancel_generation_of_job() from public, anon, authenticated;

grant update (status, updated_at) on public.job_queue to authenticated;

drop policy if exists "picture: users cancel own pending jobs" on public.job_queue;
create policy "picture: users cancel own pending jobs" on public.job_queue
  for update to authenticated
  using (created_by = (select auth.uid()) and status = 'pending'
         and job_type in ('generate-image', 'download-image'))
  with check (created_by = (select auth.uid()) and status = 'cancelled');

drop policy if exists "picture: user job updates only cancel own pending jobs" on public.job_queue;
create policy "picture: user job updates only cancel own pending jobs" on public.job_queue
  as restrictive
  for update to anon, authenticated
  using (created_by = (select auth.uid()) and status = 'pending'
         and job_type in ('generate-image', 'download-image'))
  with check (created_by = (select auth.uid()) and status = 'cancelled');
