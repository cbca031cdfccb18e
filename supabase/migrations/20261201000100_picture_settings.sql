-- The project's own settings, in the database where every door meets them: one row.
-- Idempotent: the table and its row are created when missing; an operator's values are
-- never overwritten by a re-run.
--
-- Change a value from the SQL editor (or as service_role through the API), e.g.
--   update public.picture_settings set max_in_flight_per_user = 10;

create table if not exists public.picture_settings (
  id boolean primary key default true constraint picture_settings_one_row check (id),
  max_in_flight_per_user integer not null default 5
    constraint picture_settings_max_in_flight_check check (max_in_flight_per_user >= 0),
  max_prompt_chars integer not null default 2000
    constraint picture_settings_prompt_check check (max_prompt_chars between 1 and 100000),
  min_side integer not null default 256,
  max_side integer not null default 2048,
  min_steps integer not null default 1,
  max_steps integer not null default 100,
  max_guidance_scale numeric not null default 30
    constraint picture_settings_guidance_check check (max_guidance_scale >= 0),
  max_error_chars integer not null default 1000
    constraint picture_settings_error_check check (max_error_chars between 1 and 100000),
  updated_at timestamptz not null default now(),
  constraint picture_settings_sides_check check (min_side between 1 and max_side),
  constraint picture_settings_steps_check check (min_steps between 1 and max_steps)
);

insert into public.picture_settings (id) values (true) on conflict (id) do nothing;

drop trigger if exists set_updated_at on public.picture_settings;
create trigger set_updated_at before update on public.picture_settings
  for each row execute function public.set_updated_at();

-- Read (and tuned) by operators and the service role only; the rules that use it run as
-- SECURITY DEFINER functions, so users never need to read it.
alter table public.picture_settings enable row level security;
revoke all on table public.picture_settings from public, anon, authenticated;
grant select, update on table public.picture_settings to service_role;

comment on table public.picture_settings is
  'Settings of the Picture boundary, one row (id = true). Every door that creates a generation (start-generation, request_generation, create_generation, a client''s own insert, the service role) is held to them by triggers on image_generations.';
comment on column public.picture_settings.id is 'Always true: the table has exactly one row.';
comment on column public.picture_settings.max_in_flight_per_user is
  'Generations a user may have in flight (queued, processing, downloading, and pending rows touched in the last hour); 0 = no limit. A new generation over it is refused with SQLSTATE PT429 (HTTP 429). Replaces FUNCTIONS_MAX_IN_FLIGHT.';
comment on column public.picture_settings.max_prompt_chars is 'Longest prompt (and negative_prompt), in characters.';
comment on column public.picture_settings.min_side is 'Smallest width or height a generation may ask for.';
comment on column public.picture_settings.max_side is 'Largest width or height a generation may ask for.';
comment on column public.picture_settings.min_steps is 'Fewest inference steps a generation may ask for.';
comment on column public.picture_settings.max_steps is 'Most inference steps a generation may ask for.';
comment on column public.picture_settings.max_guidance_scale is 'Largest guidance_scale (the smallest is 0).';
comment on column public.picture_settings.max_error_chars is 'Longest error_message a user may write when marking their generation failed.';
comment on column public.picture_settings.updated_at is 'Last change (kept by trigger).';

-- The row, for the rules (falls back to the defaults if an operator deleted it).
create or replace function public.picture_limits() returns public.picture_settings
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  v_row public.picture_settings;
begin
  select * into v_row from public.picture_settings where id;
  if not found then
    -- The column defaults (assigned by name: an upgraded table may order its columns
    -- differently).
    v_row.id := true;
    v_row.max_in_flight_per_user := 5;
    v_row.max_prompt_chars := 2000;
    v_row.min_side := 256;
    v_row.max_side := 2048;
    v_row.min_steps := 1;
    v_row.max_steps := 100;
    v_row.max_guidance_scale := 30;
    v_row.max_error_chars := 1000;
  end if;
  return v_row;
end
$$;

revoke all on function public.picture_limits() from public, anon, authenticated;
grant execute on function public.picture_limits() to service_role;
comment on function public.picture_limits() is
  'The picture_settings row (its defaults when the row is missing). Used by the generation rules.';
