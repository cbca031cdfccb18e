"""Hold the worker at an exact point of a job, in the database, so a kill -9 lands there.

A test-only trigger calls ``_fault_gate(point, generation_id)`` at the writes that mark the
steps of a job; when that (point, generation) is armed, the writing transaction takes a
transaction-level advisory lock the test already holds, so it waits *before its commit*
with every earlier step of the job already committed. The test then kills the worker and
either cancels the waiting statement (the write never happens: the worker died before it)
or releases the lock (the write commits but its answer goes to a dead process).

Points:
    claim                 job_queue pending -> processing (claim_jobs)
    complete:<job_type>   job_queue processing -> completed (complete_job)
    image_insert          insert into images (after the Storage upload)
    generation_completed  image_generations -> completed (in the images row's transaction)
"""

from __future__ import annotations

import time

import psycopg

from tests.support import wait_until

LOCK_KEY = 0x5FA1_7ED  # fits in objid (classid 0) for the pg_locks lookup

INSTALL = f"""
create table if not exists public._fault_gates (
  point text not null, generation_id text not null, primary key (point, generation_id));
truncate public._fault_gates;

create or replace function public._fault_gate(p_point text, p_generation text) returns void
language plpgsql security definer set search_path = '' as $$
begin
  if exists (select 1 from public._fault_gates g
             where g.point = p_point and g.generation_id = p_generation) then
    perform pg_advisory_xact_lock({LOCK_KEY});
  end if;
end $$;

create or replace function public._fault_gate_jobs() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if old.status = 'pending' and new.status = 'processing' then
    perform public._fault_gate('claim', new.payload ->> 'generation_id');
  elsif old.status = 'processing' and new.status = 'completed' then
    perform public._fault_gate('complete:' || new.job_type, new.payload ->> 'generation_id');
  end if;
  return new;
end $$;

create or replace function public._fault_gate_images() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  perform public._fault_gate('image_insert', new.generation_id::text);
  return new;
end $$;

create or replace function public._fault_gate_generations() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if new.status = 'completed' and old.status is distinct from 'completed' then
    perform public._fault_gate('generation_completed', new.id::text);
  end if;
  return new;
end $$;

drop trigger if exists _fault_gate on public.job_queue;
create trigger _fault_gate before update on public.job_queue
  for each row execute function public._fault_gate_jobs();
drop trigger if exists _fault_gate on public.images;
create trigger _fault_gate before insert on public.images
  for each row execute function public._fault_gate_images();
drop trigger if exists _fault_gate on public.image_generations;
create trigger _fault_gate before update on public.image_generations
  for each row execute function public._fault_gate_generations();
"""

UNINSTALL = """
drop trigger if exists _fault_gate on public.job_queue;
drop trigger if exists _fault_gate on public.images;
drop trigger if exists _fault_gate on public.image_generations;
drop function if exists public._fault_gate_jobs();
drop function if exists public._fault_gate_images();
drop function if exists public._fault_gate_generations();
drop function if exists public._fault_gate(text, text);
drop table if exists public._fault_gates;
"""


class Gates:
    """One armed gate at a time; ``conn`` (autocommit, superuser) holds the advisory lock."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._held = False

    def arm(self, point: str, generation_id: str) -> None:
        if not self._held:
            self.conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
            self._held = True
        self.conn.execute(
            "insert into public._fault_gates (point, generation_id) values (%s, %s)",
            (point, generation_id),
        )

    def waiting_pid(self) -> int | None:
        row = self.conn.execute(
            "select pid from pg_locks where locktype = 'advisory' and not granted "
            "and classid = 0 and objid = %s limit 1",
            (LOCK_KEY,),
        ).fetchone()
        return int(row[0]) if row else None

    def wait_held(self, timeout: float = 30.0) -> int:
        """The backend pid of the write waiting at the gate; disarms every gate."""
        pid = int(wait_until(self.waiting_pid, timeout, interval=0.02, message="a write at the gate"))
        # delete, not truncate: the held transaction keeps a lock on the table until it ends
        self.conn.execute("delete from public._fault_gates")  # later writes pass freely
        return pid

    def abort(self, pid: int) -> None:
        """Cancel the held write (it rolls back: as if the worker died before sending it)."""
        self.conn.execute("select pg_cancel_backend(%s)", (pid,))
        wait_until(lambda: self.waiting_pid() != pid, 10, message="the held write to roll back")
        self.release()

    def release(self) -> None:
        """Let held writes commit."""
        if self._held:
            self.conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
            self._held = False
        time.sleep(0.05)
