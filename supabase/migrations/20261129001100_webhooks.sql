-- Webhook mode: Replicate calls the replicate-webhook function when a prediction finishes.
-- Idempotent: tables and indexes are created if missing, functions replaced, grants and
-- pg_cron schedules re-applied.

-- Deliveries seen, by their webhook-id (the same on Replicate's retries): a replay of an
-- id is recognised and enqueues nothing.
create table if not exists public.webhook_deliveries (
  webhook_id text primary key,
  prediction_id text not null,
  received_at timestamptz not null default now()
);

create index if not exists webhook_deliveries_received_idx
  on public.webhook_deliveries (received_at);

comment on table public.webhook_deliveries is
  'Replicate webhook deliveries accepted by the replicate-webhook function, one row per webhook-id (replays are refused). Kept 7 days (cleanup_webhook_deliveries).';
comment on column public.webhook_deliveries.webhook_id is
  'The delivery''s webhook-id header: unique per event, repeated by Replicate''s retries.';
comment on column public.webhook_deliveries.prediction_id is 'The Replicate prediction the delivery reported.';
comment on column public.webhook_deliveries.received_at is 'When the delivery was accepted.';

-- Only the service role (the function) touches it: RLS on, no policy, no API-role grant.
alter table public.webhook_deliveries enable row level security;
revoke all on table public.webhook_deliveries from public, anon, authenticated;
grant select, insert, delete on table public.webhook_deliveries to service_role;

-- Deliveries and the safety net find the generation by its prediction id.
create index if not exists image_generations_prediction_idx
  on public.image_generations (replicate_prediction_id)
  where replicate_prediction_id is not null;

-- record_webhook -----------------------------------------------------------------------------
create or replace function public.record_webhook(
  p_webhook_id text,
  p_prediction_id text,
  p_payload jsonb
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_generation uuid;
  v_user uuid;
  v_job uuid;
begin
  if coalesce(btrim(p_webhook_id), '') = '' or coalesce(btrim(p_prediction_id), '') = '' then
    raise exception 'record_webhook needs a webhook id and a prediction id' using errcode = '22023';
  end if;
  insert into public.webhook_deliveries (webhook_id, prediction_id)
  values (p_webhook_id, p_prediction_id)
  on conflict (webhook_id) do nothing;
  if not found then
    return jsonb_build_object('duplicate', true);
  end if;
  select g.id, g.user_id into v_generation, v_user
  from public.image_generations g
  where g.replicate_prediction_id = p_prediction_id
  limit 1;
  -- One live job per prediction: a second delivery while it is pending or running joins it.
  v_job := public.enqueue_job(
    'process-webhook',
    coalesce(p_payload, '{}'::jsonb) || jsonb_strip_nulls(jsonb_build_object(
      'prediction_id', p_prediction_id,
      'webhook_id', p_webhook_id,
      'generation_id', v_generation,
      'user_id', v_user)),
    0, 3, now(), 'webhook:' || p_prediction_id);
  return jsonb_build_object('job_id', v_job, 'duplicate', false);
end
$$;

comment on function public.record_webhook(text, text, jsonb) is
  'replicate-webhook (service_role only): in one transaction, record the delivery id and enqueue a process-webhook job with dedupe key webhook:<prediction_id>. Returns {"job_id": ..., "duplicate": false}, or {"duplicate": true} (and enqueues nothing) for an id already recorded.';

-- enqueue_webhook_checks (the safety net for lost webhooks) ------------------------------
create or replace function public.enqueue_webhook_checks(
  p_older_than_seconds integer default 120,
  p_limit integer default 100
) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_gen record;
  v_count integer := 0;
begin
  for v_gen in
    select g.id, g.user_id, g.replicate_prediction_id as prediction_id
    from public.image_generations g
    -- queued too: a process-webhook job requeued after its worker died leaves it there.
    where g.status in ('queued', 'processing')
      and g.replicate_prediction_id is not null
      and g.updated_at < now() - make_interval(secs => greatest(coalesce(p_older_than_seconds, 120), 0))
      and not exists (
        select 1 from public.job_queue j
        where j.payload ->> 'generation_id' = g.id::text
          and j.status in ('pending', 'processing'))
      and not exists (
        select 1 from public.job_queue j
        where j.dedupe_key = 'webhook:' || g.replicate_prediction_id
          and j.status in ('pending', 'processing'))
    order by g.updated_at
    limit greatest(coalesce(p_limit, 100), 0)
  loop
    perform public.enqueue_job(
      'process-webhook',
      jsonb_build_object('prediction_id', v_gen.prediction_id, 'generation_id', v_gen.id,
                         'user_id', v_gen.user_id, 'fetch', true),
      0, 3, now(), 'webhook:' || v_gen.prediction_id);
    v_count := v_count + 1;
  end loop;
  return v_count;
end
$$;

comment on function public.enqueue_webhook_checks(integer, integer) is
  'Safety net of webhook mode (service_role only): for up to p_limit generations in processing (or queued) with a prediction id, no live job and no change for p_older_than_seconds, enqueue a process-webhook job {"prediction_id", "fetch": true} (dedupe key webhook:<prediction_id>) that fetches the prediction instead of waiting for a delivery. Safe to call concurrently. Returns how many were enqueued.';

-- cleanup_webhook_deliveries -----------------------------------------------------------------
create or replace function public.cleanup_webhook_deliveries() returns integer
language sql
security definer
set search_path = ''
as $$
  with gone as (
    delete from public.webhook_deliveries
    where received_at < now() - interval '7 days'
    returning 1
  )
  select count(*)::integer from gone
$$;

comment on function public.cleanup_webhook_deliveries() is
  'Delete webhook deliveries recorded more than 7 days ago (far beyond the signature tolerance, so a replay of one is refused by its timestamp).';

revoke all on function public.record_webhook(text, text, jsonb) from public, anon, authenticated;
revoke all on function public.enqueue_webhook_checks(integer, integer) from public, anon, authenticated;
revoke all on function public.cleanup_webhook_deliveries() from public, anon, authenticated;
grant execute on function public.record_webhook(text, text, jsonb) to service_role;
grant execute on function public.enqueue_webhook_checks(integer, integer) to service_role;
grant execute on function public.cleanup_webhook_deliveries() to service_role;

do $$
begin
  if not exists (select 1 from pg_extension where extname = 'pg_cron') then
    raise notice 'pg_cron is not installed: webhook schedules skipped (webhook-mode workers run the checks)';
    return;
  end if;
  -- cron.schedule with an existing name replaces that job: re-running keeps one.
  -- (The safety net itself runs in the webhook-mode workers, which know the configured
  -- delay; a schedule here would also enqueue jobs for deployments that never use webhooks.)
  perform cron.schedule('cleanup-webhook-deliveries', '37 3 * * *',
    'select public.cleanup_webhook_deliveries()');
end $$;
