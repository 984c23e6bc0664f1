"""The job runner: queues planned actions, runs each as a job, and never makes a cycle wait for one.

It owns what every job shares: the job record and log, metrics, the stop grace after SIGTERM, the retry
classification (a failure's `temporary` flag, decided in the gateway that raised it), and the failed attempts
the next plan holds back until their backoff ends. Each job waits in the queue of what it holds (its action's
slot): at most `per_node` Proxmox tasks and `setup_per_node` setups run at once on a node, so minutes of setup
never hold back a create; waits that hold nothing on a node (DHCP leases) run beside them, up to WAIT_SLOTS.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from reconciler.apply.context import JobContext, JobLog, Tools, patiently
from reconciler.apply.registry import execute
from reconciler.config import Config
from reconciler.gateways.sqlite import JobStore
from reconciler.logs import scrub
from reconciler.model.action import Action
from reconciler.model.errors import ReconcilerError
from reconciler.model.observed import Running
from reconciler.model.retry import Attempt, RetryPolicy
from reconciler.model.vocab import Slot

log = structlog.get_logger("reconciler.runner")
WAIT_SLOTS = 16
STOPPED = "interrupted: the reconciler stopped"


JobHook = Callable[[str, bool, float], None]  # (job type, succeeded, seconds)
Heartbeat = Callable[[], None]  # called while jobs wait, e.g. to ping systemd's watchdog


Lane = tuple[Slot, str]  # (what a job holds, on which node; "" for a wait)


@dataclass
class _Job:
    job_id: int
    action: Action
    tools: Tools
    lane: Lane = field(init=False)

    def __post_init__(self) -> None:
        slot = self.action.slot
        self.lane = (slot, "" if slot == Slot.WAIT else self.action.node)


class Runner:
    """Runs jobs in the background; safe to call from any thread."""

    def __init__(
        self,
        store: JobStore,
        per_node: int = 2,
        setup_per_node: int = 2,
        policy: RetryPolicy | None = None,
        *,
        on_job: JobHook | None = None,
        on_done: Callable[[], None] | None = None,
        heartbeat: Heartbeat | None = None,
        stop_grace: float = 60.0,
        status_lag: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.per_node = per_node
        self.setup_per_node = setup_per_node
        self.policy = policy or RetryPolicy()
        self.on_job = on_job or (lambda job_type, ok, seconds: None)
        self.on_done = on_done or (lambda: None)
        self.heartbeat = heartbeat or (lambda: None)
        self.stop_grace = stop_grace
        self.status_lag = status_lag
        self.clock = clock
        self.stopping = threading.Event()
        self._stop_seen: float | None = None
        self._changed = threading.Condition()
        self._queued: dict[Lane, deque[_Job]] = {}
        self._running: dict[Lane, int] = {}
        self._in_flight: dict[str, Running] = {}
        self._attempts: dict[str, Attempt] = {}
        self._settling: dict[str, float] = {}  # request -> until when its last job's result is trusted
        self._finished = 0

    def configure(self, config: Config) -> None:
        """Take the config's job settings (at start and on a reload): they apply to the jobs started from now on."""
        daemon = config.daemon
        with self._changed:
            self.per_node = config.proxmox.parallel_per_node
            self.setup_per_node = config.provision.parallel_per_node
            self.policy = RetryPolicy(daemon.backoff_base, daemon.backoff_max)
            self.stop_grace = daemon.stop_grace
            self.status_lag = config.proxmox.status_lag
            self._dispatch()

    # what the cycle reads

    def snapshot(self) -> tuple[dict[str, Running], dict[str, Attempt], frozenset[str]]:
        """The jobs queued or running, the failed attempts, and the requests whose job just succeeded."""
        now = self.clock()
        with self._changed:
            # Expired entries go here, so the map holds only requests whose job ended in the last status_lag.
            self._settling = {n: until for n, until in self._settling.items() if until > now}
            return dict(self._in_flight), dict(self._attempts), frozenset(self._settling)

    @property
    def busy(self) -> bool:
        with self._changed:
            return bool(self._in_flight)

    @property
    def finished(self) -> int:
        """How many jobs have ended so far; a waiter compares it to notice an end."""
        with self._changed:
            return self._finished

    def next_retry(self) -> float | None:
        """The clock time of the earliest retry or end of settling still ahead, if any."""
        now = self.clock()
        with self._changed:
            times = [a.retry_at for a in self._attempts.values()] + list(self._settling.values())
        ahead = [t for t in times if t > now]
        return min(ahead) if ahead else None

    def settled_at(self, names: Iterable[str]) -> float | None:
        """When the last of these requests stops settling (clock time), or None when none is."""
        with self._changed:
            ends = [self._settling[n] for n in names if n in self._settling]
        return max(ends) if ends else None

    def in_backoff(self) -> int:
        now = self.clock()
        with self._changed:
            return sum(1 for a in self._attempts.values() if a.retry_at > now)

    def forget_failures(self) -> None:
        """Let every failed request be tried again at once (a new `once` run)."""
        with self._changed:
            self._attempts.clear()

    # starting and waiting

    def submit(self, actions: Iterable[Action], tools: Tools) -> dict[str, int]:
        """Queue the actions as jobs; request -> job id. A request with a job in flight is not given another."""
        started: dict[str, int] = {}
        with self._changed:
            if self.stopping.is_set():
                return started
            try:
                for action in actions:
                    if action.name in self._in_flight:
                        continue
                    payload: dict[str, object] = {
                        "vmid": action.vmid,
                        "node": action.node,
                        "revision": action.revision,
                        **action.details(),
                    }
                    job_id = self.store.create_job(action.job_type, action.name, action.profile, payload)
                    job = _Job(job_id, action, tools)
                    self._in_flight[action.name] = Running(job_id, action)
                    self._queued.setdefault(job.lane, deque()).append(job)
                    started[action.name] = job_id
            finally:  # what was queued runs, even when recording a later job failed
                self._dispatch()
        return started

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until more than `seen` jobs have ended (or timeout); the count now."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._finished <= seen and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            return self._finished

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running; whether that happened within timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            return not self._in_flight

    def stop(self) -> None:
        """Start no more jobs: queued ones are dropped (their requests are planned again after a restart);
        running ones may finish their Proxmox task within the stop grace."""
        with self._changed:
            self.stopping.set()
            for queue in self._queued.values():
                while queue:
                    job = queue.popleft()
                    self._in_flight.pop(job.action.name, None)
                    self.store.finish_job(job.job_id, False, "not started", error=f"{STOPPED} before it started")
            self._changed.notify_all()

    # running

    def _dispatch(self) -> None:
        """Start queued jobs where a slot is free (the lock is held)."""
        limits = {Slot.TASK: self.per_node, Slot.SETUP: self.setup_per_node, Slot.WAIT: WAIT_SLOTS}
        for lane, queue in self._queued.items():
            limit = limits[lane[0]]
            while queue and self._running.get(lane, 0) < limit and not self.stopping.is_set():
                job = queue.popleft()
                self._running[lane] = self._running.get(lane, 0) + 1
                threading.Thread(target=self._run, args=(job,), name=f"job-{job.job_id}", daemon=True).start()

    def _abort(self) -> str | None:
        """Why to stop waiting: the stop grace after SIGTERM ran out. Also beats the heart."""
        self.heartbeat()
        if not self.stopping.is_set():
            return None
        now = time.monotonic()
        if self._stop_seen is None:
            self._stop_seen = now
        return STOPPED if now - self._stop_seen >= self.stop_grace else None

    def _run(self, job: _Job) -> None:
        action = job.action
        began = time.monotonic()
        attempt: Attempt | None = None
        try:
            attempt = self._execute(job)
        except Exception as exc:  # the job record itself could not be written: say so where it can be seen
            log.exception("job bookkeeping failed", request=action.name, job_id=job.job_id)
            attempt = self._failed(job, f"internal error in {action.job_type}: {type(exc).__name__}: {exc}", True)
        finally:
            # Whatever happened above, the slot is freed and the request is no longer in flight.
            with self._changed:
                self._running[job.lane] -= 1
                self._in_flight.pop(action.name, None)
                if attempt is None:
                    self._attempts.pop(action.name, None)
                    self._settling[action.name] = self.clock() + self.status_lag
                else:
                    self._attempts[action.name] = attempt
                    self._settling.pop(action.name, None)
                self._finished += 1
                self._dispatch()
                self._changed.notify_all()
        self.on_job(action.job_type, attempt is None, time.monotonic() - began)
        self.on_done()

    def _execute(self, job: _Job) -> Attempt | None:
        """Run the job's executor and record how it ended; the failed attempt, or None when it succeeded."""
        action = job.action
        job_log = JobLog(self.store, job.job_id, action.name, action.job_type, self._abort)

        def record(write: Callable[[], None]) -> None:
            patiently(write, self._abort, job_log.log.warning)

        record(lambda: self.store.start_job(job.job_id))
        job_log.info(action.describe())
        try:
            summary = execute(action, JobContext(job.job_id, job_log, self.store, job.tools, self._abort))
        except ReconcilerError as exc:
            step, reason = getattr(exc, "step", action.job_type.value), getattr(exc, "reason", str(exc))
            attempt = self._failed(job, f"{step} failed: {reason}", exc.temporary, getattr(exc, "output", ()))
            job_log.error(f"{step} failed: {reason}", step=step, temporary=exc.temporary)
            record(lambda: self.store.finish_job(job.job_id, False, attempt.standing.message, error=reason))
            return attempt
        except Exception as exc:  # a bug must fail this job, not the daemon
            error = f"{type(exc).__name__}: {exc}"
            job_log.log.exception("internal error")
            job_log.error(f"internal error: {error}")
            failed = self._failed(job, f"internal error in {action.job_type}: {error}", False)
            record(lambda: self.store.finish_job(job.job_id, False, failed.standing.message, error=error))
            return failed
        job_log.info(f"done: {summary}")
        record(lambda: self.store.finish_job(job.job_id, True, summary))
        return None

    def _failed(self, job: _Job, message: str, temporary: bool, output: tuple[str, ...] = ()) -> Attempt:
        action = job.action
        # The message and output reach the status file, pushed to Git: no secret may ride along in them.
        standing = action.standing(job.job_id, failure=scrub(message), output=tuple(scrub(line) for line in output))
        with self._changed:
            previous = self._attempts.get(action.name)
        worth = action.worth_retry(temporary)
        return self.policy.next(previous, action.job_type, action.revision, standing, worth, self.clock())
