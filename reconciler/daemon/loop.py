"""`reconciler run`: reconcile at start, then on the timer, a webhook, a watched change or a job's end.

Passes never overlap and never wait for the work they start. The lock, the job database and the runner
belong to the process; a reload (SIGHUP, or a watched change of the config or a profile) builds a new
Reconciler first and swaps it in only when it is whole, so a broken file never stops the daemon.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

from reconciler.config import Config, load_config, read_secret
from reconciler.cycle import CycleReport
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.passes import Outcome, Passes, ask
from reconciler.daemon.server import Endpoints, serve
from reconciler.daemon.systemd import Notifier
from reconciler.daemon.triggers import Triggers
from reconciler.daemon.watch import start_watching
from reconciler.desired.profile import builtin_profiles_dir
from reconciler.gateways.git import GitTimeout
from reconciler.model.errors import ConfigError, GitError, ProxmoxError, StateError
from reconciler.model.vocab import Phase
from reconciler.runtime import Runtime, build_reconciler, open_runtime

log = structlog.get_logger("reconciler.daemon")

# Changing these needs a restart: the lock and the job database belong to the process.
RESTART_ONLY = (("git", "checkout"), ("git", "branch"), ("state", "database"), ("http", "listen"))
STALLED_AFTER = 5.0  # s a step talking to the Git remote may run before /readyz names it (at most half git.timeout)


@dataclass
class Health:
    """What /readyz judges: the last good pass, and the part that failed the pass after it."""

    last_good: float | None = None  # monotonic
    failing: str = ""  # in fixed words (see failing_part): /readyz answers anyone


def failing_part(exc: Exception) -> str:
    """The part a pass failed on, in fixed words: never the error's own text, which may quote a library (a
    header with the token, a URL) and is for the log only."""
    if isinstance(exc, GitTimeout):
        return f"git {exc.step} timed out after {exc.seconds:g} s"
    if isinstance(exc, GitError):
        return (
            "git push refused by the remote" if exc.step == "push" and not exc.temporary else f"git {exc.step} failed"
        )
    if isinstance(exc, ProxmoxError):
        if exc.status is None:
            return "proxmox not answering" if exc.temporary else "proxmox cannot be called (see the log)"
        if exc.status == 401:
            return "proxmox refused the API token"
        if exc.status == 403:
            return f"proxmox refused {exc.step} (the API token lacks a privilege)"
        return f"proxmox {exc.step} failed (HTTP {exc.status})"
    if isinstance(exc, StateError):
        return "job database locked by another process" if exc.temporary else "job database unusable"
    return "internal error (see the log)"


def next_wake(now: float, interval: float, provisioning: bool, recheck: float, next_retry: float | None) -> float:
    """When to reconcile without a trigger: the poll, sooner while a request is Provisioning or a retry is due."""
    deadline = now + interval
    if provisioning:  # e.g. a create left running by an earlier process: look again soon
        deadline = min(deadline, now + recheck)
    if next_retry is not None:
        deadline = min(deadline, next_retry + 0.01)
    return deadline


class Daemon:
    """The long-running loop around the reconcile pass."""

    def __init__(
        self,
        config_path: Path,
        environ: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = config_path
        self.environ = dict(os.environ if environ is None else environ)
        self.clock = clock
        self.metrics = Metrics()
        self.triggers = Triggers(clock, on_fire=lambda reason: self.metrics.triggers.labels(reason).inc())
        self.stopping = threading.Event()
        self.reload = threading.Event()
        self.notifier = Notifier(self.environ)
        self.health = Health()
        self.passes = Passes(clock)
        self.config: Config = load_config(config_path)
        self._watch_stop = threading.Event()
        self._provisioning = False
        self._known_tip: str | None = None  # the remote's tip as the last pass or the watcher saw it
        self._git_deadline: float | None = None  # monotonic, after a stop: no git step runs past it
        self.runtime: Runtime | None = None

    def readiness(self) -> tuple[bool, str]:
        """(ready, why) for /readyz: why names the part that hangs or fails, in fixed words."""
        h = self.health
        problem = self._stalled() or h.failing
        if h.last_good is None:
            return False, "no successful cycle yet" + (f" ({problem})" if problem else "")
        age = self.clock() - h.last_good
        if age > self.config.daemon.stale_after:
            return False, f"last successful cycle {age:.0f} s ago" + (f" ({problem})" if problem else "")
        if problem:
            return False, problem
        return True, f"ready; last successful cycle {age:.0f} s ago"

    def _stalled(self) -> str:
        """The step talking to the Git remote that has run too long now, e.g. "git fetch running for 42 s"."""
        runtime = self.runtime
        running = runtime.reconciler.checkout.remote_step() if runtime is not None else None
        if running is None or running[1] < min(STALLED_AFTER, self.config.git.timeout / 2):
            return ""
        return f"git {running[0]} running for {running[1]:.0f} s"

    def _secret(self) -> bytes | None:
        """The webhook secret, read as every secret is (stripped, checked, scrubbed from logs); None when unset."""
        try:
            value = read_secret(self.config.http.webhook_secret_env, self.environ)
        except ConfigError:  # a control character inside: said at start; the webhook stays off
            return None
        return value.reveal().encode() if value is not None else None

    def _token(self) -> bytes | None:
        """The API token `reconciler reconcile` shows, read as every secret is; None when unset."""
        try:
            value = read_secret(self.config.http.api_token_env, self.environ)
        except ConfigError:
            return None
        return value.reveal().encode() if value is not None else None

    def stop(self, *_: object) -> None:
        """SIGTERM and SIGINT: set the flag here; the rest runs in a thread, because a signal handler runs on
        the main thread between any two bytecodes, maybe while that thread holds the locks the rest needs."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        threading.Thread(target=self._stop_now, name="stop", daemon=True).start()

    def _stop_now(self) -> None:
        grace = self.config.daemon.stop_grace
        log.info("stopping: running tasks may finish", grace_seconds=grace)
        self.notifier.stopping()
        self.passes.stop()
        self._git_deadline = time.monotonic() + grace
        if self.runtime is not None:
            # A fetch or push to a remote that does not answer, now or in the last pass, ends within the grace.
            self.runtime.reconciler.checkout.finish_by(self._git_deadline)
            self.runtime.runner.stop()
        self.triggers.fire("stop")

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()
        self.triggers.fire("reload")

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; 0 on a clean stop."""
        # Read now: registers it with the log scrubber before anything can log it, and an operator learns at start,
        # not from Gitea's first failed delivery, that the webhook is off.
        if self._secret() is None:
            log.warning("webhook off: secret not set", variable=self.config.http.webhook_secret_env)
        if self._token() is None:
            log.info("reconcile endpoint off: token not set", variable=self.config.http.api_token_env)
        runtime = self.runtime = open_runtime(
            self.config,
            self.environ,
            on_job=self.metrics.job_done,
            on_request=self.metrics.proxmox_request,
            on_done=lambda: self.triggers.fire("job"),
            heartbeat=self.notifier.watchdog,
        )
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self._hangup)
        http = self.config.http
        endpoints = Endpoints(
            self.metrics,
            self.config.git.branch,
            http.max_body,
            self._secret,
            self.triggers.fire,
            self.readiness,
            max_connections=http.max_connections,
            read_timeout=http.read_timeout,
            token=self._token,
            reconcile=lambda names, wait: ask(self.passes, self.triggers.fire, names, wait),
        )
        try:
            server = serve(http.host, http.port, endpoints)
        except OSError as exc:
            runtime.close()
            raise ConfigError("http.listen", [f"cannot listen on {http.listen}: {exc.strerror}"]) from None
        self._watch(self.config)
        log.info(
            "started", listen=http.listen, interval=self.config.daemon.interval, checkout=str(self.config.git.checkout)
        )
        self.notifier.ready("started")
        self.metrics.triggers.labels("start").inc()
        reasons = {"start"}
        try:
            while not self.stopping.is_set():
                if self.reload.is_set():
                    self._reload(runtime)
                self._pass(runtime, reasons)
                reasons = self._wait(runtime)
            # Running jobs get the stop grace; then one last pass writes down where everything stands.
            runtime.runner.wait_idle(self.config.daemon.stop_grace + 10)
            self._pass(runtime, {"stop"})
        finally:
            self._watch_stop.set()
            server.shutdown()
            runtime.close()
            log.info("stopped")
        return 0

    def _watch(self, config: Config) -> None:
        if not config.daemon.watch:
            return
        files = [self.config_path.resolve(), config.profiles or builtin_profiles_dir()]
        self._watch_stop = threading.Event()
        start_watching(
            config.git.local_path,
            files,
            self._remote_moved,
            lambda: self._hangup(signal.SIGHUP, None),
            self._watch_stop,
        )

    def _remote_moved(self) -> None:
        """The local remote's refs changed: reconcile, unless the tip is the reconciler's own push or one it
        has already seen (a push touches the refs more than once: a lock file, then the ref)."""
        runtime = self.runtime
        if runtime is not None:
            checkout = runtime.reconciler.checkout
            try:
                tip = checkout.remote_tip()
            except GitError:
                tip = None  # cannot tell: look
            if tip is not None and checkout.is_own(tip):
                self.metrics.own_pushes_seen.inc()
                return
            if tip is not None and tip == self._known_tip:
                return
            self._known_tip = tip
        self.triggers.fire("watch")

    def _reload(self, runtime: Runtime) -> None:
        """Swap in a Reconciler built from the files as they are now; on any problem keep the running one."""
        self.reload.clear()
        try:
            config = load_config(self.config_path)
            changed = [
                f"{section}.{key}"
                for section, key in RESTART_ONLY
                if getattr(getattr(config, section), key) != getattr(getattr(self.config, section), key)
            ]
            if changed:
                raise ConfigError(str(self.config_path), [f"{', '.join(changed)}: a change here needs a restart"])
            fresh = build_reconciler(
                config, self.environ, runtime.store, runtime.runner, on_request=self.metrics.proxmox_request
            )
        except ConfigError as exc:
            log.error("reload refused; keeping the running config", source=exc.source, problems=exc.problems)
            self.metrics.reload(ok=False)
            return
        old, runtime.reconciler = runtime.reconciler, fresh
        old.close()
        runtime.runner.configure(config)
        self._watch_stop.set()
        self.config = config
        self._watch(config)
        self.metrics.reload(ok=True)
        log.info("config reloaded")

    def _wait(self, runtime: Runtime) -> set[str]:
        """Sleep until a trigger, the next poll (with jitter), a due retry or a recheck while Provisioning."""
        daemon = self.config.daemon
        interval = daemon.interval * (1 + random.uniform(-daemon.jitter, daemon.jitter))
        deadline = next_wake(self.clock(), interval, self._provisioning, daemon.recheck, runtime.runner.next_retry())
        while not self.stopping.is_set():
            self.notifier.watchdog()
            step = min(max(0.0, deadline - self.clock()), self.notifier.watchdog_interval or 3600.0)
            reasons = self.triggers.wait(step)
            if reasons:
                return reasons
            if self.clock() >= deadline:
                self.metrics.triggers.labels("interval").inc()
                return {"interval"}
        return {"stop"}

    def _pass(self, runtime: Runtime, reasons: set[str]) -> CycleReport | None:
        """One pass, numbered for `reconciler reconcile`, which may be waiting for it."""
        number = self.passes.begin()
        report = self._one_pass(runtime, reasons)
        if report is None:
            self.passes.end(Outcome(number, failed=self.health.failing or "failed"))
        else:
            self.passes.end(
                Outcome(number, report.revision, report.commit, dict(report.started), dict(report.statuses))
            )
        return report

    def _one_pass(self, runtime: Runtime, reasons: set[str]) -> CycleReport | None:
        began = self.clock()
        self.notifier.watchdog()
        if self._git_deadline is not None:  # a reload may have swapped in a Reconciler after the stop
            runtime.reconciler.checkout.finish_by(self._git_deadline)
        structlog.contextvars.bind_contextvars(trigger=",".join(sorted(reasons)))
        try:
            report = runtime.reconciler.cycle()
        except GitError as exc:
            self.metrics.git_failures.labels(exc.step).inc()
            self._failed(str(exc), began, failing_part(exc))
            return None
        except (ProxmoxError, StateError) as exc:  # StateError: a database locked by another process, maybe
            self._failed(str(exc), began, failing_part(exc))
            return None
        except Exception as exc:  # a bug must not end the daemon: say it, and try again next time
            log.exception("cycle failed")
            self._failed(f"{type(exc).__name__}: {exc}", began, failing_part(exc))
            return None
        finally:
            structlog.contextvars.unbind_contextvars("trigger")
        seconds = self.clock() - began
        self.metrics.cycles.labels("success").inc()
        self.metrics.cycle_seconds.observe(seconds)
        self.metrics.standings(report.statuses, held=report.decision.plan.held is not None)
        self.metrics.hand_edited.set(len(runtime.reconciler.hand_edits.current))
        self.metrics.backoff.set(runtime.runner.in_backoff())
        self.metrics.last_success.set(time.time())
        if report.revision:
            self.metrics.revision.info({"revision": report.revision})
        self._known_tip = report.commit or report.revision
        self.health = Health(last_good=self.clock())
        # Work of this process ends in a job-end trigger; a guest busy for another reason (a task begun before a
        # restart, a create nobody here knows of) needs a look.
        self._provisioning = any(
            s.phase in (Phase.PROVISIONING, Phase.PENDING)
            and n not in report.decision.observed.in_flight
            and n not in report.started
            for n, s in report.statuses.items()
        )
        self.notifier.status(f"last cycle: {dict(report.phases)}")
        return report

    def _failed(self, reason: str, began: float, part: str) -> None:
        """Count and log a failed pass (reason, the error's text, to the log only); /readyz names part."""
        self.metrics.cycles.labels("error").inc()
        self.metrics.cycle_seconds.observe(self.clock() - began)
        self.health.failing = part
        log.error("cycle failed", reason=reason)
