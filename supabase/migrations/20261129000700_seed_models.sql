-- The model catalogue of SPEC section 6. Rows that already exist (by replicate_id) are
-- kept as the operator left them, except that a missing version hash is filled in for the
-- community models, which cannot run without one.

insert into public.models (name, replicate_id, version, default_width, default_height,
                           default_steps, default_guidance_scale, is_active)
select v.name, v.replicate_id, v.version, v.w, v.h, v.steps, v.guidance, true
from (values
  ('FLUX Schnell',        'black-forest-labs/flux-schnell',          null, 1024, 1024, 4,  null::numeric),
  ('FLUX Dev',            'black-forest-labs/flux-dev',              null, 1024, 1024, 28, 3),
  ('FLUX Krea Dev',       'black-forest-labs/flux-krea-dev',         null, 1024, 1024, 28, 3),
  ('FLUX 1.1 Pro',        'black-forest-labs/flux-1.1-pro',          null, 1024, 1024, null, null),
  ('Ideogram V3 Turbo',   'ideogram-ai/ideogram-v3-turbo',           null, 1024, 1024, null, null),
  ('Imagen 4 Fast',       'google/imagen-4-fast',                    null, 1024, 1024, null, null),
  ('SDXL Lightning',      'bytedance/sdxl-lightning-4step',
     '6f7a773af6fc3e8de9d5a3c00be77c17308914bf67772726aff83496ba1e3bbe', 1024, 1024, 4, 0),
  ('SDXL',                'stability-ai/sdxl',
     '7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc', 1024, 1024, 30, 7.5),
  ('SeeDream 4',          'bytedance/seedream-4',                    null, 1024, 1024, null, null),
  ('SeeDream 3',          'bytedance/seedream-3',                    null, 1024, 1024, null, 2.5),
  ('Recraft V3 SVG',      'recraft-ai/recraft-v3-svg',               null, 1024, 1024, null, null),
  ('Recraft V3',          'recraft-ai/recraft-v3',                   null, 1024, 1024, null, null),
  ('Stable Diffusion 3.5 Large', 'stability-ai/stable-diffusion-3.5-large', null, 1024, 1024, 35, 3.5),
  ('Qwen Image',          'qwen/qwen-image',                         null, 1024, 1024, 30, 3)
) as v(name, replicate_id, version, w, h, steps, guidance)
where not exists (select 1 from public.models m where m.replicate_id = v.replicate_id);

update public.models set version = '6f7a773af6fc3e8de9d5a3c00be77c17308914bf67772726aff83496ba1e3bbe'
where replicate_id = 'bytedance/sdxl-lightning-4step' and version is null;
update public.models set version = '7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc'
where replicate_id = 'stability-ai/sdxl' and version is null;
