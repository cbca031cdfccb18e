"""A released migration never changes (supabase/migrations/README.md): the CLI and
`picture-worker migrate` skip versions already applied, so an edit would never reach a
deployed database, and a rename makes `supabase db push` refuse to run. Every later change
is a new file; add its line here when it is released."""

from __future__ import annotations

import hashlib
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[2] / "supabase" / "migrations"

RELEASED = """
553ab3f69fd73b45b38607b6056eee2683a957068f17f000441be87658175fec  20261129000100_generations.sql
cd2f7a91e87143c14e47ba47136ff976f06db123f1bad3057ed446de15f199b2  20261129000200_job_queue.sql
316a8d7dd80886fa8aee8ce5f14dae1c64a364e98296344207068c49a13854b3  20261129000300_queue_rpcs.sql
f2e99d26c777bdc47cbd4edeeed75855173804ecdd24f8f8dbf33df71aa880b8  20261129000400_security_storage_realtime.sql
7b4123e442d5423b241131a5e714f58bf20ff0b03df390c24b097fb5756ac6cf  20261129000500_monitoring.sql
222073be93ce021f74179bb7e5d1c068f466ed5da1f85b5f7746f322b742dbd7  20261129000600_maintenance.sql
e16db0f3cd6bcd2b7f34f6a0a4660322ead939bee93b8ff87ebf44b1088dcc29  20261129000700_seed_models.sql
069d9ef638149e32ad8e6e46c3086367ee73f773247c9f99a8074f4557d6f536  20261129000800_worker_support.sql
a1cc7325341cc0bae5cdbb3e07ba57b4472658369ce2b15a07da6322ea16391d  20261129000900_start_generation.sql
3d05bec637a2c35094a42871cfba56b45de167c050488a2a9a0c3c655f7235d9  20261129001000_ops.sql
1b17d2ea15444424bad2374e8a57002a03c79f747dcfbc62c4b2f7620287c5bc  20261129001100_webhooks.sql
9bb0fd50e56c93d453c2404461728d4562a3e45dac1ea21b9e610250c098dbde  20261201000100_picture_settings.sql
f4e45f6eace2fc5c2ba27c17f3e927e2fc415ee81bc6a57d181f40a434f634c9  20261201000200_catalogue_decides.sql
0ffb9cb432ada3ce1dbbcc790bea665c8c94da49d67cd445a7b1df47cd186d91  20261201000300_generation_rules.sql
b9c81b351e56dddeaf4ad35f860d17dffbfc50903189c1b4292bd218d9806fc3  20261201000400_job_rules.sql
75564f48035127efb46fe220ba46f0d45555d89fafbfbf6bcee1d0559c68a226  20261201000500_generation_rpcs.sql
ece5e6e43cb5c63381b3ce4e74ff1a7734105474c25d1aa5c123f1ccd2f5013c  20261201000600_monitoring_views.sql
52cd1467504807dce2b56abb9e8d2cd2f86bf75af10278c60a58aeabc787e227  20261204000100_release_lost_claims.sql
e5e12e89150d07b4f0eac11e3d39ced5a57a3ef2b69a57153895d85956bd8270  20261205000100_fewer_round_trips.sql
"""


def released() -> dict[str, str]:
    pairs = (line.split() for line in RELEASED.strip().splitlines())
    return {name: digest for digest, name in pairs}


def test_released_migrations_are_unchanged() -> None:
    changed = {
        name: "missing (renamed or deleted?)"
        if not (MIGRATIONS / name).is_file()
        else "edited: make the change a new migration file instead"
        for name, digest in released().items()
        if not (MIGRATIONS / name).is_file()
        or hashlib.sha256((MIGRATIONS / name).read_bytes()).hexdigest() != digest
    }
    assert changed == {}


def test_new_migrations_come_after_the_released_ones() -> None:
    last = max(released())
    new = sorted(p.name for p in MIGRATIONS.glob("*.sql") if p.name not in released())
    assert all(name > last for name in new), f"{new} would run before {last} on a fresh database"
