-- Picture: image_generations, images and models.
-- Idempotent, additive: creates the tables on an empty project and upgrades the deployed
-- variants (M and G) in place without touching existing rows.

create table if not exists public.image_generations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid references auth.users (id) on delete cascade,
  prompt text not null,
  negative_prompt text,
  model text,
  style text,
  width integer,
  height integer,
  steps integer,
  guidance_scale numeric,
  status text not null default 'pending',
  error_message text,
  generation_time_seconds numeric,
  replicate_prediction_id text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  completed_at timestamptz
);

alter table public.image_generations add column if not exists negative_prompt text;
alter table public.image_generations add column if not exists style text;
alter table public.image_generations add column if not exists steps integer;
alter table public.image_generations add column if not exists guidance_scale numeric;
alter table public.image_generations add column if not exists error_message text;
alter table public.image_generations add column if not exists generation_time_seconds numeric;
alter table public.image_generations add column if not exists replicate_prediction_id text;
alter table public.image_generations add column if not exists updated_at timestamptz not null default now();
alter table public.image_generations add column if not exists completed_at timestamptz;
alter table public.image_generations add column if not exists job_id uuid;

-- The status set grew over time: replace whatever check the deployment has with ours.
do $$
declare
  c record;
begin
  for c in
    select conname from pg_constraint
    where conrelid = 'public.image_generations'::regclass and contype = 'c'
      and pg_get_constraintdef(oid) ilike '%status%'
      and conname <> 'image_generations_status_check_v2'
  loop
    execute format('alter table public.image_generations drop constraint %I', c.conname);
  end loop;
  if not exists (select 1 from pg_constraint where conname = 'image_generations_status_check_v2') then
    alter table public.image_generations add constraint image_generations_status_check_v2
      check (status in ('pending', 'queued', 'processing', 'downloading', 'completed', 'failed', 'cancelled'));
  end if;
end $$;

create index if not exists image_generations_user_created_idx
  on public.image_generations (user_id, created_at desc);
create index if not exists image_generations_inflight_idx
  on public.image_generations (status, updated_at)
  where status in ('pending', 'queued', 'processing', 'downloading');

comment on table public.image_generations is
  'One image request of a Picture user. Clients watch status (Realtime UPDATE or polling) until completed.';
comment on column public.image_generations.status is
  'pending -> queued -> processing -> downloading -> completed, or failed / cancelled. A retried attempt returns to queued, never failed.';
comment on column public.image_generations.error_message is
  'Last error; kept while a retry is queued, final when status = failed.';
comment on column public.image_generations.replicate_prediction_id is
  'Replicate prediction id, persisted as soon as it exists so a retry reuses it instead of paying twice.';
comment on column public.image_generations.job_id is 'The generate-image job that serves this generation.';
comment on column public.image_generations.generation_time_seconds is 'Seconds the provider took (prediction).';

create table if not exists public.images (
  id uuid primary key default gen_random_uuid(),
  generation_id uuid references public.image_generations (id) on delete cascade,
  user_id uuid references auth.users (id) on delete cascade,
  filename text,
  storage_path text,
  public_url text,
  file_size bigint,
  width integer,
  height integer,
  format text,
  prompt text,
  negative_prompt text,
  model text,
  created_at timestamptz not null default now()
);

alter table public.images add column if not exists filename text;
alter table public.images add column if not exists storage_path text;
alter table public.images add column if not exists public_url text;
alter table public.images add column if not exists file_size bigint;
alter table public.images add column if not exists width integer;
alter table public.images add column if not exists height integer;
alter table public.images add column if not exists format text;
alter table public.images add column if not exists prompt text;
alter table public.images add column if not exists negative_prompt text;
alter table public.images add column if not exists model text;

create index if not exists images_user_created_idx on public.images (user_id, created_at desc);

-- At most one image per generation. Old deployments may already hold duplicates written by
-- the edge function's retries; we never delete user data, so the unique index is created
-- only when the data allows it (the worker checks for an existing row either way).
do $$
begin
  if not exists (select 1 from pg_indexes where schemaname = 'public' and indexname = 'images_generation_id_key') then
    if exists (
      select 1 from public.images where generation_id is not null
      group by generation_id having count(*) > 1
    ) then
      raise notice 'images has duplicate rows per generation; unique index images_generation_id_key not created';
      create index if not exists images_generation_id_idx on public.images (generation_id);
    else
      create unique index images_generation_id_key on public.images (generation_id);
    end if;
  end if;
end $$;

comment on table public.images is 'A stored, finished image (one per generation), in the public bucket generated-images.';
comment on column public.images.storage_path is 'Object path in bucket generated-images: {user_id}/{generation_id}.{format}.';

create table if not exists public.models (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  replicate_id text not null,
  version text,
  default_width integer,
  default_height integer,
  default_steps integer,
  default_guidance_scale numeric,
  is_active boolean not null default true,
  created_at timestamptz not null default now()
);
alter table public.models add column if not exists version text;
alter table public.models add column if not exists default_width integer;
alter table public.models add column if not exists default_height integer;
alter table public.models add column if not exists default_steps integer;
alter table public.models add column if not exists default_guidance_scale numeric;
alter table public.models add column if not exists is_active boolean not null default true;
alter table public.models add column if not exists created_at timestamptz not null default now();

do $$
begin
  if not exists (select 1 from pg_indexes where schemaname = 'public' and indexname = 'models_replicate_id_key')
     and not exists (select 1 from public.models group by replicate_id having count(*) > 1) then
    create unique index models_replicate_id_key on public.models (replicate_id);
  end if;
end $$;

comment on table public.models is 'Model catalogue read by start-generation. version is required for community models (sdxl, sdxl-lightning).';
comment on column public.models.replicate_id is 'owner/name on Replicate; the model family is chosen by substring of this id.';

-- updated_at bookkeeping, shared by every table that has the column.
create or replace function public.set_updated_at() returns trigger
language plpgsql
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists set_updated_at on public.image_generations;
create trigger set_updated_at before update on public.image_generations
  for each row execute function public.set_updated_at();
