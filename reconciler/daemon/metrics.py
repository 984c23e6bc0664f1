"""The daemon's Prometheus metrics, all prefixed reconciler_ (seconds for time, _total for counters).

reconciler_cycles_total{result="success|error"}
reconciler_cycle_duration_seconds (histogram)
reconciler_requests{phase="Ready|Failed|..."}
reconciler_requests_unhealthy (status healthy: false: setup or its health check failed)
reconciler_requests_not_applied (status applied: false: the container is not, or not yet, as asked)
reconciler_requests_in_backoff
reconciler_requests_drifted (status lists drift: fields of the guest changed by hand in Proxmox)
reconciler_requests_flapping (drift that came back after corrections: reported, no longer corrected each pass)
reconciler_requests_refused (status lists refused: a change that cannot be made in place, nothing changed)
reconciler_requests_dns{state="Ready|Pending|Failed"} (requests by the state of their DNS records)
reconciler_mass_change_held (1 while the mass-change guard holds destroys, stops and orphans back)
reconciler_generated_files_hand_edited (status and Caddy files that lost their header or became a link: left stale)
reconciler_jobs_total{type="create|start|find-address|provision|update|migrate|stop|destroy|adopt|dns|validate",
    result="succeeded|failed"}
reconciler_job_duration_seconds{type} (histogram)
reconciler_proxmox_requests_total{method, status}
reconciler_git_failures_total{operation="fetch|commit|push|read history"}
reconciler_webhook_requests_total{result="accepted|ignored|unauthorized|too_large|bad_request|disabled"}
reconciler_triggers_total{reason="start|webhook|watch|job|interval|reload|stop"}
reconciler_own_pushes_seen_total (the watcher saw the reconciler's own push and started nothing)
reconciler_config_reloads_total{result="success|refused"}
reconciler_config_last_reload_successful
reconciler_last_success_timestamp_seconds
reconciler_revision_info{revision}
reconciler_build_info{version, python}
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from reconciler import __version__
from reconciler.model.standing import Standing
from reconciler.model.vocab import DnsState, JobType, Phase

CYCLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
JOB_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """One registry per daemon, so several can live in one test process."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.cycles = Counter("reconciler_cycles", "Reconcile cycles by result.", ["result"], registry=r)
        self.cycle_seconds = Histogram(
            "reconciler_cycle_duration_seconds", "Duration of a reconcile cycle.", buckets=CYCLE_BUCKETS, registry=r
        )
        self.requests = Gauge(
            "reconciler_requests", "Request files by phase after the last cycle.", ["phase"], registry=r
        )
        self.unhealthy = Gauge(
            "reconciler_requests_unhealthy",
            "Requests whose setup or health check failed (status healthy: false).",
            registry=r,
        )
        self.not_applied = Gauge(
            "reconciler_requests_not_applied",
            "Requests whose container is not (yet) as asked (status applied: false).",
            registry=r,
        )
        self.drifted = Gauge(
            "reconciler_requests_drifted",
            "Requests whose guest has fields changed by hand in Proxmox (status drift).",
            registry=r,
        )
        self.flapping = Gauge(
            "reconciler_requests_flapping",
            "Requests whose drift came back after corrections; no longer corrected each pass.",
            registry=r,
        )
        self.refused = Gauge(
            "reconciler_requests_refused",
            "Requests asking a change that cannot be made in place (status refused); nothing was changed.",
            registry=r,
        )
        self.dns = Gauge(
            "reconciler_requests_dns",
            "Requests by the state of their DNS records (status dns.state); Failed: see the status's dns.message.",
            ["state"],
            registry=r,
        )
        self.mass_change_held = Gauge(
            "reconciler_mass_change_held",
            "1 while the mass-change guard holds destroys, stops and orphans back until the operator confirms.",
            registry=r,
        )
        self.hand_edited = Gauge(
            "reconciler_generated_files_hand_edited",
            "Generated status and Caddy files edited by hand (header removed) or replaced by a link; never updated.",
            registry=r,
        )
        self.backoff = Gauge(
            "reconciler_requests_in_backoff", "Failed requests waiting for their next try.", registry=r
        )
        self.jobs = Counter("reconciler_jobs", "Jobs by type and result.", ["type", "result"], registry=r)
        self.job_seconds = Histogram(
            "reconciler_job_duration_seconds", "Duration of a job.", ["type"], buckets=JOB_BUCKETS, registry=r
        )
        self.proxmox = Counter(
            "reconciler_proxmox_requests",
            "Proxmox API requests by method and HTTP status.",
            ["method", "status"],
            registry=r,
        )
        self.git_failures = Counter("reconciler_git_failures", "Git operations that failed.", ["operation"], registry=r)
        self.webhooks = Counter("reconciler_webhook_requests", "Webhook deliveries by result.", ["result"], registry=r)
        self.asks = Counter(
            "reconciler_reconcile_requests",
            "Passes asked for by `reconciler reconcile`, by result.",
            ["result"],
            registry=r,
        )
        for result in ("answered", "unauthorized", "disabled", "bad_request"):
            self.asks.labels(result)
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds", "Unix time the last successful cycle finished.", registry=r
        )
        self.revision = Info("reconciler_revision", "Git revision last reconciled.", registry=r)
        Info("reconciler_build", "Version of the reconciler.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        for result in ("success", "error"):
            self.cycles.labels(result)
        for operation in ("fetch", "push"):
            self.git_failures.labels(operation)
        self.triggers = Counter("reconciler_triggers", "Reasons a pass was asked for.", ["reason"], registry=r)
        for reason in ("start", "interval", "webhook", "watch", "job", "reload", "reconcile", "stop"):
            self.triggers.labels(reason)
        self.own_pushes_seen = Counter(
            "reconciler_own_pushes_seen", "Pushes of the reconciler's own the watcher saw and ignored.", registry=r
        )
        self.reloads = Counter("reconciler_config_reloads", "Config reloads by result.", ["result"], registry=r)
        self.reload_ok = Gauge(
            "reconciler_config_last_reload_successful",
            "1 when the last reload of the config and profiles worked (or none was tried), 0 when it was refused.",
            registry=r,
        )
        self.reload_ok.set(1)
        for result in ("success", "refused"):
            self.reloads.labels(result)
        for phase in Phase:
            self.requests.labels(phase).set(0)
        for state in DnsState:
            self.dns.labels(state).set(0)
        for job_type in JobType:
            for result in ("succeeded", "failed"):
                self.jobs.labels(job_type, result)

    def job_done(self, job_type: str, ok: bool, seconds: float) -> None:
        self.jobs.labels(job_type, "succeeded" if ok else "failed").inc()
        self.job_seconds.labels(job_type).observe(seconds)

    def reload(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "refused").inc()
        self.reload_ok.set(1 if ok else 0)

    def proxmox_request(self, method: str, status: str) -> None:
        self.proxmox.labels(method, status).inc()

    def standings(self, statuses: Mapping[str, Standing], held: bool = False) -> None:
        """Requests by phase, and how many are not applied, not healthy, drifted or refused, after a pass."""
        for phase in Phase:
            self.requests.labels(phase).set(sum(1 for s in statuses.values() if s.phase == phase))
        self.unhealthy.set(sum(1 for s in statuses.values() if s.healthy is False))
        self.not_applied.set(sum(1 for s in statuses.values() if s.applied is False))
        self.drifted.set(sum(1 for s in statuses.values() if s.drift))
        self.flapping.set(sum(1 for s in statuses.values() if s.flapping))
        self.refused.set(sum(1 for s in statuses.values() if s.refused))
        for state in DnsState:
            self.dns.labels(state).set(sum(1 for s in statuses.values() if s.dns is not None and s.dns.state == state))
        self.mass_change_held.set(1 if held else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
