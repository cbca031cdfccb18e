-- Row level security, table grants, the generated-images bucket and Realtime membership.

alter table public.image_generations enable row level security;
alter table public.images enable row level security;
alter table public.models enable row level security;
alter table public.job_queue enable row level security;

-- Drop the policies this migration owns, then (re)create them: idempotent.
do $$
declare
  p record;
begin
  for p in
    select schemaname, tablename, policyname from pg_policies
    where policyname like 'picture: %'
  loop
    execute format('drop policy %I on %I.%I', p.policyname, p.schemaname, p.tablename);
  end loop;
end $$;

create policy "picture: users read own generations" on public.image_generations
  for select to authenticated using (user_id = (select auth.uid()));
create policy "picture: users create own generations" on public.image_generations
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy "picture: users delete own generations" on public.image_generations
  for delete to authenticated using (user_id = (select auth.uid()));

create policy "picture: users read own images" on public.images
  for select to authenticated using (user_id = (select auth.uid()));
create policy "picture: users delete own images" on public.images
  for delete to authenticated using (user_id = (select auth.uid()));

create policy "picture: models are public" on public.models
  for select to anon, authenticated using (true);

create policy "picture: users read own jobs" on public.job_queue
  for select to authenticated using (created_by = (select auth.uid()));

-- Table privileges: Supabase grants everything to the API roles by default; narrow it.
revoke all on public.job_queue from anon, authenticated;
grant select on public.job_queue to authenticated;
grant all on public.job_queue to service_role;

revoke all on public.image_generations from anon;
revoke update, truncate, references, trigger on public.image_generations from authenticated;
grant select, insert, delete on public.image_generations to authenticated;
grant all on public.image_generations to service_role;

revoke all on public.images from anon;
revoke insert, update, truncate, references, trigger on public.images from authenticated;
grant select, delete on public.images to authenticated;
grant all on public.images to service_role;

revoke all on public.models from anon, authenticated;
grant select on public.models to anon, authenticated;
grant all on public.models to service_role;

revoke all on function public.set_updated_at() from public, anon, authenticated;

-- Storage: public bucket, images only, size-limited; only service_role writes.
insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values ('generated-images', 'generated-images', true, 20971520,
        array['image/webp', 'image/png', 'image/jpeg', 'image/svg+xml'])
on conflict (id) do update
  set public = true,
      file_size_limit = excluded.file_size_limit,
      allowed_mime_types = excluded.allowed_mime_types;

create policy "picture: users read own generated images" on storage.objects
  for select to authenticated
  using (bucket_id = 'generated-images' and (storage.foldername(name))[1] = (select auth.uid())::text);

-- Realtime: clients watch their generations (UPDATE); the worker wakes on job INSERTs.
do $$
begin
  if not exists (select 1 from pg_publication_tables
                 where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'image_generations') then
    alter publication supabase_realtime add table public.image_generations;
  end if;
  if not exists (select 1 from pg_publication_tables
                 where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'job_queue') then
    alter publication supabase_realtime add table public.job_queue;
  end if;
end $$;
