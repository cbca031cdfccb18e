"""The daemon: one asyncio loop that claims work for a thread pool.

The loop waits on (wake-up | poll timer | earliest scheduled_at | stop). Wake-ups come from
Realtime INSERTs on job_queue (only for the jobs this worker ranks first or second among
the live workers: ``worker.routing``) and from finished jobs whose thread found nothing
next; Realtime is a hint, polling guarantees progress (procrastinate's and pgqueuer's
model). The loop claims only as many jobs as it has free threads, so a claimed job never
waits for a thread while its lease runs; a job that completes claims the next one for its
own thread in the same call (``Outcome.next``), and every claim answer says when the next
retry is due. Blocking Supabase calls made by the loop (claims, heartbeats) run on a small
I/O executor, never on the loop itself and never on the job threads.

Stopping (SIGTERM/SIGINT): claim nothing more, let running jobs finish within
WORKER_SHUTDOWN_GRACE, then release the rest (pending again, attempt given back). A second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from worker import __version__, leases, webhook_checks
from worker.context import JobContext
from worker.errors import WorkerError
from worker.jobs import Job
from worker.metrics import Metrics
from worker.ports import Chain, Claimed, WorkerInfo
from worker.replicate.polling import share_of
from worker.routing import WakeRouter
from worker.runner import Outcome, Runner
from worker.services import Services
from worker.statuses import OUTCOME_FAILED, JobOutcome

log = logging.getLogger("worker.daemon")
T = TypeVar("T")

ONCE_HORIZON = 30.0  # --once waits for retries due within this many seconds
STATS_REFRESH = 600.0  # s between reads of every replica's prediction durations


class Wakeups(Protocol):
    connected: bool

    async def run(self, stop: asyncio.Event) -> None: ...


class Daemon:
    def __init__(
        self,
        services: Services,
        metrics: Metrics,
        *,
        once: bool = False,
        wakeups_factory: Callable[
            [Callable[[Mapping[str, Any] | None], None], Callable[[bool], None]], Wakeups
        ]
        | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.metrics = metrics
        self.once = once
        self.worker_id = self.settings.worker_id
        self.runner = Runner(services, self.worker_id, metrics)
        self.in_flight: dict[str, JobContext] = {}
        self.jobs_done = 0
        self.jobs_failed = 0
        self.last_db_ok = 0.0
        self._wakeups_factory = wakeups_factory
        self._wakeups: Wakeups | None = None
        self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="job")
        self._io = ThreadPoolExecutor(2, thread_name_prefix="io")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None  # stop claiming
        self._halt: asyncio.Event | None = None  # stop heartbeats etc. (after the drain)
        self._signals = 0
        self._claim_failures = 0
        self.router = WakeRouter(self.worker_id, self.settings.job_types)
        self._next_at: datetime | None = None  # earliest retry, from the last claim answer
        # A claim failed (or a completion that claimed was sent twice): jobs may be held
        # under our id that we do not know. Guarded by _chain_lock, with _chains: the jobs
        # whose completion may be claiming for their thread right now.
        self._claims_in_doubt = False
        self._chain_lock = threading.Lock()
        self._chains: set[str] = set()

    # -- public state ------
    @property
    def realtime_connected(self) -> bool:
        return bool(self._wakeups and self._wakeups.connected)

    @property
    def mode(self) -> str:
        return "webhook" if self.settings.webhook_url else "polling"

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def wake(self, row: Mapping[str, Any] | None = None) -> None:
        """Thread-safe: something may be claimable now. ``row``: the job a Realtime INSERT
        announced, claimed here only when this worker is first (or, a little later,
        second) in line for it (``worker.routing``)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._route, row)

    def _route(self, row: Mapping[str, Any] | None) -> None:
        assert self._wake is not None and self._loop is not None
        delay = 0.0 if row is None else self.router.delay_for(row, datetime.now(UTC))
        if delay is None:
            return
        if delay <= 0:
            self._wake.set()
        else:
            self._loop.call_later(delay, self._wake.set)

    # -- main ------
    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._halt = asyncio.Event()
        self._install_signals()
        self.metrics.set("picture_worker_concurrency", self.settings.concurrency)
        self.metrics.set("picture_worker_jobs_in_flight", 0)
        await self._register()
        log.info(
            "worker %s started: concurrency %d, job types %s; wakes on %s; predictions by %s",
            self.worker_id,
            self.settings.concurrency,
            ",".join(self.settings.job_types),
            f"Realtime INSERTs and a poll every {self.settings.poll_interval:g}s"
            if self.settings.realtime
            else f"a poll every {self.settings.poll_interval:g}s (realtime off)",
            "webhook" if self.mode == "webhook" else "polling Replicate",
            extra={"action": "worker.started", "worker_id": self.worker_id},
        )
        background = [
            asyncio.create_task(
                self._every(self.settings.heartbeat_interval, self._heartbeat_jobs)
            ),
            asyncio.create_task(self._every(self.settings.heartbeat_interval, self._register)),
            asyncio.create_task(
                self._every(self.settings.requeue_interval, self._requeue_stale, first=0.0)
            ),
        ]
        if self.settings.replicate_poll_interval is None and not self.settings.webhook_url:
            background.append(
                asyncio.create_task(self._every(STATS_REFRESH, self._refresh_stats, first=0.0))
            )
        if self.settings.webhook_url:  # the safety net for lost webhooks
            every = webhook_checks.interval(self.settings)
            check = self._every(every, self._check_webhooks, first=0.0)
            background.append(asyncio.create_task(check))
        if self._wakeups_factory is not None and self.settings.realtime:
            self._wakeups = self._wakeups_factory(self.wake, self._on_realtime_state)
            background.append(asyncio.create_task(self._wakeups.run(self._stop)))
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            self._stop.set()
            self._halt.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._register(stopped=True)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._io.shutdown(wait=False, cancel_futures=True)
        log.info(
            "worker %s stopped (%d done, %d failed)",
            self.worker_id,
            self.jobs_done,
            self.jobs_failed,
            extra={"action": "worker.stopped", "worker_id": self.worker_id},
        )
        return 0

    async def _io_call(self, fn: Callable[[], T]) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._io, fn)

    # -- claiming ------
    async def _claim_loop(self) -> None:
        assert self._stop is not None and self._wake is not None
        while not self._stop.is_set():
            self._wake.clear()
            free = self.settings.concurrency - len(self.in_flight)
            if any(ctx.job.suspect for ctx in self.in_flight.values()):
                free = 0  # a suspect runs alone (see _claim)
            claimed = await self._claim(free) if free > 0 else []
            if (
                self.once
                and not claimed
                and not self.in_flight
                # a job that finished while the claim was on its way may have enqueued more
                and not self._wake.is_set()
                and not await self._retry_due_soon()
            ):
                log.info(
                    "queue drained (--once)",
                    extra={"action": "worker.drained", "worker_id": self.worker_id},
                )
                return
            if claimed and len(claimed) == free:
                continue  # maybe more: claim again as soon as a thread frees up (wake)
            await self._sleep_until_wake(await self._wait_timeout(free, claimed))

    async def _claim(self, free: int) -> list[Job]:
        if self._claims_in_doubt:
            await self._release_lost_claims()
        credit = self.services.credit
        self.metrics.set("picture_worker_generate_paused", 1 if credit.paused() else 0)
        types = credit.claimable(self.settings.job_types)
        if not types:
            return []
        try:
            jobs = await self._claim_batch(free, types)
        except WorkerError as exc:
            self._claim_failures += 1
            self.metrics.inc("picture_worker_claims_total", result="error")
            log.warning(
                "claim failed (%d in a row): %s",
                self._claim_failures,
                exc.message,
                extra={"action": "claim.failed", "worker_id": self.worker_id},
            )
            self._doubt()
            await self._release_lost_claims()
            return []
        self._claim_failures = 0
        self.last_db_ok = time.monotonic()
        self.metrics.inc("picture_worker_claims_total", result="jobs" if jobs else "empty")
        self._start(jobs)
        return jobs

    async def _claim_batch(self, free: int, types: list[str]) -> list[Job]:
        """Claim up to ``free`` jobs. A suspect (its last worker died holding it: maybe it
        kills the process) is only taken by an idle worker and then runs alone, so a
        poison job exhausts its own attempts without taking bystanders down with it."""
        queue, lease = self.services.queue, self.settings.lease_seconds
        busy = bool(self.in_flight)
        answer = await self._io_call(
            lambda: queue.claim_work(
                free,
                types,
                self.worker_id,
                lease,
                exclude_suspects=busy,
                suspect_alone=not busy,
            )
        )
        self._next_at = answer.next_at
        return list(answer.jobs)

    async def _release_lost_claims(self) -> None:
        """A failed claim may have committed with its answer lost: hand back the jobs held
        under this worker's id that it is not running (attempt given back), so they do not
        wait for their lease to expire. Tried again before each claim until it answers."""
        with self._chain_lock:
            if self._chains:  # a completion may be claiming right now: after it lands
                return
        known = list(self.in_flight)
        queue = self.services.queue
        try:
            released = await self._io_call(lambda: queue.release_lost(self.worker_id, known))
        except WorkerError as exc:
            log.warning(
                "could not check for lost claims yet: %s",
                exc.message,
                extra={"action": "claim.recovery_failed", "worker_id": self.worker_id},
            )
            return
        with self._chain_lock:
            self._claims_in_doubt = False
        if released:
            log.warning(
                "released %d job(s) claimed by a call whose answer was lost: %s",
                len(released),
                ", ".join(released),
                extra={"action": "claim.recovered", "worker_id": self.worker_id},
            )
            self.wake()

    def _submit(self, job: Job) -> None:
        ctx = JobContext(
            job,
            self.services,
            self.worker_id,
            self.settings.job_timeout,
            chain=functools.partial(self._chain, job.id),
        )
        self.in_flight[job.id] = ctx
        self.metrics.set("picture_worker_jobs_in_flight", len(self.in_flight))
        future = self._pool.submit(self.runner.run, ctx)
        loop = self._loop
        assert loop is not None

        def done(f: Any) -> None:
            loop.call_soon_threadsafe(self._job_done, job.id, f)

        future.add_done_callback(done)

    def _chain(self, job_id: str) -> Chain | None:
        """Called from a job thread as its job completes: what that call may claim for the
        thread (one job, of the types claimable now), or nothing while stopping or while
        lost claims are being looked for (that search must not race a claim in flight)."""
        if self._stop is None or self._stop.is_set():
            return None
        types = self.services.credit.claimable(self.settings.job_types)
        if not types:
            return None
        with self._chain_lock:
            if self._claims_in_doubt:
                return None
            self._chains.add(job_id)
        return Chain(1, tuple(types), self.settings.lease_seconds)

    def _doubt(self) -> None:
        with self._chain_lock:
            self._claims_in_doubt = True

    def _job_done(self, job_id: str, future: Any) -> None:
        self.in_flight.pop(job_id, None)
        self.metrics.set("picture_worker_jobs_in_flight", len(self.in_flight))
        outcome = future.result() if not future.cancelled() and future.exception() is None else None
        if isinstance(outcome, Outcome) and outcome.status == JobOutcome.COMPLETED:
            self.jobs_done += 1
        elif isinstance(outcome, Outcome) and outcome.status in OUTCOME_FAILED:
            self.jobs_failed += 1
        nxt = outcome.next if isinstance(outcome, Outcome) else None
        if nxt is not None:
            self._adopt(nxt)
        with self._chain_lock:
            chained = job_id in self._chains
            self._chains.discard(job_id)
        doubt = chained and (nxt is None or nxt.in_doubt)
        if doubt:
            # The completion may have claimed (its answer lost, or sent twice): look for
            # jobs held under our id that we do not run, before the next claim.
            self._doubt()
        # The thread is free: claim for it, unless its completion already did (and either
        # found a job, now running, or found the queue empty).
        claimed_for_thread = nxt is not None and bool(nxt.jobs or nxt.asked)
        if self._wake is not None and (doubt or self.once or not claimed_for_thread):
            self._wake.set()

    def _adopt(self, claimed: Claimed) -> None:
        if claimed.asked and len(claimed.jobs) < claimed.asked:
            self._next_at = claimed.next_at
        self._start(claimed.jobs)

    def _start(self, jobs: Sequence[Job]) -> None:
        """Run claimed jobs (from a claim or a completion that claimed), recording how long
        each waited since it was due."""
        now = datetime.now(UTC)
        for job in jobs:
            if job.due_at is not None:
                self.metrics.observe(
                    "picture_worker_pickup_latency_seconds",
                    max(0.0, (now - job.due_at).total_seconds()),
                    job_type=job.job_type,
                )
            self._submit(job)

    async def _wait_timeout(self, free: int, claimed: list[Job]) -> float:
        interval = self.settings.poll_interval
        if self.settings.realtime and not self.realtime_connected:
            interval = min(interval, self.settings.poll_interval_degraded)
        if self._claim_failures:
            interval = min(30.0, max(interval, 2.0 ** min(self._claim_failures, 5)))
        if free > len(claimed):  # idle threads: wake for the earliest scheduled retry
            nxt = self._next_scheduled()
            if nxt is not None:
                interval = min(interval, max(0.05, nxt))
        return interval

    def _next_scheduled(self) -> float | None:
        """Seconds until the earliest retry, as the last claim answer said."""
        if self._next_at is None:
            return None
        return (self._next_at - datetime.now(UTC)).total_seconds()

    async def _retry_due_soon(self) -> bool:
        nxt = self._next_scheduled()
        return nxt is not None and nxt <= ONCE_HORIZON

    async def _sleep_until_wake(self, timeout: float) -> None:
        assert self._wake is not None and self._stop is not None
        waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(self._stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _on_realtime_state(self, connected: bool) -> None:
        self.metrics.set("picture_worker_realtime_connected", 1 if connected else 0)
        if connected:
            self.metrics.inc("picture_worker_realtime_reconnects_total")
        # Realtime never replays missed events and may say SUBSCRIBED before events flow:
        # poll once after every (re)subscribe; while it is down, polling speeds up.
        self.wake()

    # -- periodic work ------
    async def _every(
        self, interval: float, fn: Callable[[], Awaitable[None]], first: float | None = None
    ) -> None:
        # Runs until the drain is over: leases must be extended and cancellations noticed
        # while running jobs finish during the shutdown grace period.
        assert self._halt is not None
        delay = interval if first is None else first
        while not self._halt.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._halt.wait(), timeout=delay)
                return
            delay = interval
            try:
                await fn()
            except Exception:  # a periodic task must never die
                log.exception(
                    "periodic task %s failed",
                    getattr(fn, "__name__", fn),
                    extra={"action": "worker.periodic_failed", "worker_id": self.worker_id},
                )

    async def _heartbeat_jobs(self) -> None:
        answered = await leases.heartbeat(
            list(self.in_flight.values()),
            self.services.queue,
            self.settings.lease_seconds,
            self._io_call,
            still_running=lambda ctx: ctx.job.id in self.in_flight,
        )
        if answered:
            self.last_db_ok = time.monotonic()

    async def _register(self, stopped: bool = False) -> None:
        info = WorkerInfo(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            version=__version__,
            mode=self.mode,
            concurrency=self.settings.concurrency,
            in_flight=len(self.in_flight),
            jobs_done=self.jobs_done,
            jobs_failed=self.jobs_failed,
            realtime_connected=self.realtime_connected if self.settings.realtime else None,
            stopped=stopped,
            job_types=tuple(self.settings.job_types),
        )
        live = int(max(45.0, 3 * self.settings.heartbeat_interval))
        try:
            peers = await self._io_call(lambda: self.services.queue.heartbeat_worker(info, live))
        except (WorkerError, RuntimeError) as exc:
            log.warning(
                "worker registry update failed: %s",
                exc,
                extra={"action": "worker.register_failed", "worker_id": self.worker_id},
            )
            return
        self.router.update(peers)
        polling = [(p.worker_id, p.concurrency) for p in peers if p.mode != "webhook"]
        self.services.polling.budget.set_share(
            share_of(self.worker_id, self.settings.concurrency, polling)
        )

    async def _refresh_stats(self) -> None:
        """Every replica's recent prediction durations, for the polling schedule."""
        try:
            stats = await self._io_call(lambda: self.services.queue.prediction_stats(24))
        except WorkerError as exc:
            log.info(
                "prediction durations not refreshed: %s",
                exc.message,
                extra={"action": "polling.stats_failed", "worker_id": self.worker_id},
            )
            return
        self.services.polling.refresh(stats)

    async def _requeue_stale(self) -> None:
        try:
            count = await self._io_call(self.services.queue.requeue_stale)
        except WorkerError as exc:
            log.warning(
                "requeue_stale_jobs failed: %s",
                exc.message,
                extra={"action": "requeue.failed", "worker_id": self.worker_id},
            )
            return
        if count:
            log.info(
                "requeued %d stale job(s)",
                count,
                extra={"action": "requeue.done", "worker_id": self.worker_id},
            )
            self.wake()

    async def _check_webhooks(self) -> None:
        if await self._io_call(functools.partial(webhook_checks.run, self.services)):
            self.wake()

    # -- stopping ------
    def _install_signals(self) -> None:
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning(
                "second %s: exiting now; unfinished jobs return after their lease",
                sig.name,
                extra={"action": "worker.killed", "worker_id": self.worker_id},
            )
            logging.shutdown()
            os._exit(1)
        log.info(
            "%s received: draining %d job(s) for up to %.0fs",
            sig.name,
            len(self.in_flight),
            self.settings.shutdown_grace,
            extra={"action": "worker.stopping", "worker_id": self.worker_id},
        )
        self.request_stop()

    def _release(self, job_id: str) -> bool:
        return self.services.queue.release(job_id, self.worker_id)

    async def _drain(self) -> None:
        assert self._wake is not None
        deadline = time.monotonic() + self.settings.shutdown_grace
        while self.in_flight and time.monotonic() < deadline:
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=min(0.2, max(0.0, deadline - time.monotonic()))
                )
        for job_id, ctx in list(self.in_flight.items()):
            ctx.abandon()
            try:
                released = await self._io_call(functools.partial(self._release, job_id))
            except WorkerError as exc:
                ctx.log(
                    "job.release_failed",
                    "could not release: %s (the lease will expire)",
                    exc.message,
                    level=logging.WARNING,
                )
                continue
            ctx.log(
                "job.released",
                "released unfinished job (attempt given back)"
                if released
                else "job already finished elsewhere",
            )
