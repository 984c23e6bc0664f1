"""`reconciler run`: reconcile at start, then on the timer, a webhook or a watched change; never two at once."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import structlog

from reconciler.config import Config, load_config
from reconciler.cycle import CycleReport
from reconciler.daemon.backoff import Backoff
from reconciler.daemon.metrics import Metrics
from reconciler.daemon.server import Endpoints, serve
from reconciler.daemon.systemd import Notifier
from reconciler.daemon.triggers import Triggers
from reconciler.daemon.watch import start_watching
from reconciler.desired.profile import builtin_profiles_dir
from reconciler.errors import ConfigError, GitError, ProxmoxError
from reconciler.logs import register_secret
from reconciler.runtime import Runtime, open_runtime

log = structlog.get_logger("reconciler.daemon")


@dataclass
class Health:
    """What /readyz judges: the last good cycle, and whether Git and Proxmox answered last time."""

    last_good: float | None = None  # monotonic
    fetch_ok: bool = True
    proxmox_ok: bool = True
    last_error: str = ""


class Daemon:
    """The long-running loop around the reconcile cycle."""

    def __init__(self, config_path: Path, environ: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.environ = dict(os.environ if environ is None else environ)
        self.metrics = Metrics()
        self.triggers = Triggers()
        self.stopping = threading.Event()
        self.reload = threading.Event()
        self.notifier = Notifier(self.environ)
        self.health = Health()
        self.config: Config = load_config(config_path)
        self.backoff = Backoff(self.config.daemon.backoff_base, self.config.daemon.backoff_max)
        self._watch_stop = threading.Event()
        self._provisioning = False

    def _open(self, config: Config) -> Runtime:
        return open_runtime(
            config,
            self.environ,
            on_job=self.metrics.job_done,
            on_request=self.metrics.proxmox_request,
            stopping=self.stopping,
            heartbeat=self.notifier.watchdog,
        )

    def readiness(self) -> tuple[bool, str]:
        h = self.health
        if h.last_good is None:
            return False, "no successful cycle yet" + (f": {h.last_error}" if h.last_error else "")
        age = time.monotonic() - h.last_good
        if age > self.config.daemon.stale_after:
            return False, f"last successful cycle {age:.0f} s ago: {h.last_error}"
        if not h.fetch_ok:
            return False, f"git fetch failing: {h.last_error}"
        if not h.proxmox_ok:
            return False, f"Proxmox failing: {h.last_error}"
        return True, f"ready; last successful cycle {age:.0f} s ago"

    def _secret(self) -> bytes | None:
        value = self.environ.get(self.config.http.webhook_secret_env, "")
        return value.encode() if value else None

    def stop(self, *_: object) -> None:
        if not self.stopping.is_set():
            log.info("stopping: running tasks may finish", grace_seconds=self.config.daemon.stop_grace)
            self.notifier.stopping()
        self.stopping.set()
        self.triggers.fire("stop")

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()
        self.triggers.fire("reload")

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; 0 on a clean stop."""
        register_secret(self.environ.get(self.config.http.webhook_secret_env, ""))
        runtime = self._open(self.config)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGHUP, self._hangup)
        http = self.config.http
        endpoints = Endpoints(
            self.metrics, self.config.git.branch, http.max_body, self._secret, self.triggers.fire, self.readiness
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
        reasons = {"start"}
        try:
            while not self.stopping.is_set():
                if self.reload.is_set():
                    runtime = self._reload(runtime)
                self._cycle(runtime, reasons)
                reasons = self._wait()
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
            lambda: self.triggers.fire("remote changed"),
            lambda: self._hangup(signal.SIGHUP, None),
            self._watch_stop,
        )

    def _reload(self, runtime: Runtime) -> Runtime:
        self.reload.clear()
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused; keeping the running config", problems=exc.problems)
            return runtime
        runtime.close()
        try:
            fresh = self._open(config)
        except ConfigError as exc:
            log.error("reload refused; keeping the running config", problems=exc.problems)
            return self._open(self.config)
        self._watch_stop.set()
        self.config = config
        self._watch(config)
        log.info("config reloaded")
        return fresh

    def _wait(self) -> set[str]:
        """Sleep until a trigger, the next poll (with jitter) or the end of a request's backoff."""
        daemon = self.config.daemon
        interval = daemon.interval * (1 + random.uniform(-daemon.jitter, daemon.jitter))
        deadline = time.monotonic() + interval
        if self._provisioning:  # a create or a DHCP lease is under way: look again soon
            deadline = min(deadline, time.monotonic() + daemon.recheck)
        waiting = self.backoff.waiting()
        if waiting:
            deadline = min(deadline, time.monotonic() + min(waiting.values()) + 0.01)
        while not self.stopping.is_set():
            self.notifier.watchdog()
            step = min(max(0.0, deadline - time.monotonic()), self.notifier.watchdog_interval or 3600.0)
            reasons = self.triggers.wait(step)
            if reasons:
                return reasons
            if time.monotonic() >= deadline:
                return {"interval"}
        return {"stop"}

    def _cycle(self, runtime: Runtime, reasons: set[str]) -> CycleReport | None:
        began = time.monotonic()
        self.notifier.watchdog()
        structlog.contextvars.bind_contextvars(trigger=",".join(sorted(reasons)))
        try:
            report = runtime.reconciler.cycle(gate=self.backoff.allows)
        except GitError as exc:
            self.metrics.git_failures.labels(exc.step).inc()
            self.health.fetch_ok = exc.step != "fetch"
            self._failed(str(exc), began)
            return None
        except ProxmoxError as exc:
            self.health.proxmox_ok = False
            self._failed(str(exc), began)
            return None
        except Exception as exc:  # a bug must not end the daemon: say it, and try again next time
            log.exception("cycle failed")
            self._failed(f"{type(exc).__name__}: {exc}", began)
            return None
        finally:
            structlog.contextvars.unbind_contextvars("trigger")
        seconds = time.monotonic() - began
        self.backoff.record(report.outcomes, {d.name: d.revision for d in report.decision.valid})
        self.metrics.cycles.labels("success").inc()
        self.metrics.cycle_seconds.observe(seconds)
        self.metrics.phases(report.phases)
        self.metrics.backoff.set(len(self.backoff.waiting()))
        self.metrics.last_success.set(time.time())
        if report.revision:
            self.metrics.revision.info({"revision": report.revision})
        self.health = Health(last_good=time.monotonic())
        self._provisioning = report.phases.get("Provisioning", 0) > 0
        self.notifier.status(f"last cycle: {dict(report.phases)}")
        return report

    def _failed(self, reason: str, began: float) -> None:
        self.metrics.cycles.labels("error").inc()
        self.metrics.cycle_seconds.observe(time.monotonic() - began)
        self.health.last_error = reason
        log.error("cycle failed", reason=reason)
