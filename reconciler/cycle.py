"""One reconcile cycle: source (Git) -> desired -> observed -> plan -> apply -> report (status, Caddy, Git)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import structlog

from reconciler.apply import Applier, Heartbeat, JobHook, Outcome
from reconciler.config import Config
from reconciler.desired.profile import Profile
from reconciler.desired.validate import Claims, Desired, Invalid, RequestFile, validate
from reconciler.gateways.git import Checkout
from reconciler.gateways.proxmox import Proxmox
from reconciler.gateways.sqlite import JobStore
from reconciler.observe import Observed, foreign_addresses, observe
from reconciler.plan import Action, Create, Plan, plan
from reconciler.report import caddy, status
from reconciler.report.files import GeneratedPaths, changes
from reconciler.report.status import Status

log = structlog.get_logger("reconciler.cycle")
FAILING = ("Failed", "Invalid")


@dataclass(frozen=True)
class Source:
    """The checkout at one revision: request files and the generated files already there."""

    revision: str | None
    requests: list[RequestFile]
    caddy: dict[str, bytes]
    status: dict[str, bytes]


@dataclass(frozen=True)
class Decision:
    """Desired, observed and the plan between them."""

    valid: list[Desired]
    invalid: list[Invalid]
    observed: Observed
    plan: Plan


@dataclass
class CycleReport:
    revision: str | None
    statuses: dict[str, Status]
    decision: Decision
    outcomes: list[Outcome] = field(default_factory=list)
    commit: str | None = None
    seconds: float = 0.0

    @property
    def phases(self) -> Counter[str]:
        return Counter(s.phase for s in self.statuses.values())

    @property
    def failing(self) -> list[str]:
        return sorted(n for n, s in self.statuses.items() if s.phase in FAILING)


class Reconciler:
    """Runs cycles for one config; the gateways are given, so tests and the demo drive real ones."""

    def __init__(
        self,
        config: Config,
        profiles: Mapping[str, Profile],
        pve: Proxmox,
        store: JobStore,
        checkout: Checkout,
        on_job: JobHook | None = None,
        stopping: threading.Event | None = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.config = config
        self.profiles = profiles
        self.pve = pve
        self.store = store
        self.checkout = checkout
        self.paths = GeneratedPaths(config.paths)
        self.applier = Applier(
            pve,
            store,
            config.proxmox,
            on_job=on_job,
            stopping=stopping,
            stop_grace=config.daemon.stop_grace,
            heartbeat=heartbeat,
        )

    def read_source(self) -> Source:
        """Fetch, fast-forward and read the request files with the commit that last changed each."""
        revision = self.checkout.sync()
        paths = self.config.paths
        texts = self.checkout.read_dir(paths.requests)
        revisions = self.checkout.last_changes(paths.requests, set(texts))
        requests = [
            RequestFile(path, path.rsplit("/", 1)[-1].rsplit(".", 1)[0], text, revisions.get(path))
            for path, text in sorted(texts.items())
        ]
        return Source(revision, requests, self.checkout.read_dir(paths.caddy), self.checkout.read_dir(paths.status))

    def decide(self, source: Source) -> Decision:
        """Validate, observe Proxmox and plan; reads only."""
        observed = observe(self.pve)
        claims = Claims(caddy.domains(source.caddy), frozenset(observed.owned))
        site = self.config.site
        valid, invalid = validate(source.requests, self.profiles, site, claims)
        names = [f.name for f in source.requests]
        resources = self.store.resources()
        decision = plan(valid, observed, resources, site.vmid_range, names)
        if any(isinstance(a, Create) and a.desired.static_ip for a in decision.actions):
            # Addresses on guests the reconciler does not own cost a call each: only when about to use one.
            claims = Claims(claims.service_domains, claims.provisioned, foreign_addresses(self.pve, observed))
            valid, invalid = validate(source.requests, self.profiles, site, claims)
            decision = plan(valid, observed, resources, site.vmid_range, names)
        return Decision(valid, invalid, observed, decision)

    def cycle(self, gate: Callable[[Action], bool] | None = None) -> CycleReport:
        """One full cycle; raises GitError or ProxmoxError only when the cycle as a whole cannot run.

        gate may hold actions back (a request in retry backoff); they and the actions a shutdown kept
        from starting are deferred: their requests keep the status they had.
        """
        began = time.monotonic()
        source = self.read_source()
        decision = self.decide(source)
        actions = [a for a in decision.plan.actions if gate is None or gate(a)]
        outcomes = self.applier.apply(actions)
        done = {o.name for o in outcomes}
        deferred = {a.desired.name: a for a in decision.plan.actions if a.desired.name not in done}
        statuses = self.statuses(source, decision, outcomes, deferred)
        files = self.generated_files(source, decision, statuses)
        report = CycleReport(source.revision, statuses, decision, outcomes)
        summary = ", ".join(f"{n} {p}" for p, n in sorted(report.phases.items()))
        report.commit = self.checkout.publish(files, f"reconciler: {summary or 'no requests'}")
        report.seconds = time.monotonic() - began
        log.info(
            "cycle done",
            revision=source.revision,
            commit=report.commit,
            actions=len(decision.plan.actions),
            seconds=round(report.seconds, 3),
            **{p.lower(): n for p, n in report.phases.items()},
        )
        return report

    def statuses(
        self,
        source: Source,
        decision: Decision,
        outcomes: list[Outcome],
        deferred: Mapping[str, Action] | None = None,
    ) -> dict[str, Status]:
        """The status of every request file, and of owned guests whose request is gone."""
        deferred = deferred or {}
        previous = {}
        for text in source.status.values():
            parsed = status.parse(text)
            if parsed is not None:
                previous[parsed.name] = parsed
        by_outcome = {o.name: o for o in outcomes}
        verdicts = decision.plan.verdicts
        out: dict[str, Status] = {}
        for d in decision.valid:
            service = self.paths.caddy(d.domain) if d.exposed and d.domain else None
            result: Outcome | None = by_outcome.get(d.name)
            if result is None and d.name in deferred:
                # Held back: the status it had stands; a new request says what it waits for.
                waiting = f"waiting to {deferred[d.name].describe()}"
                out[d.name] = previous.get(d.name) or Status(
                    d.name, d.path, "Pending", waiting, d.revision, service=service
                )
                continue
            if result is not None:
                new = Status(
                    d.name,
                    d.path,
                    result.phase,
                    result.message,
                    d.revision,
                    result.vmid,
                    result.node,
                    result.address,
                    service,
                    result.job_id,
                )
            else:
                v = verdicts[d.name]
                new = Status(d.name, d.path, v.phase, v.message, d.revision, v.vmid, v.node, v.address, service)
            out[d.name] = new
        for inv in decision.invalid:
            guests = decision.observed.owned.get(inv.name, [])
            message = f"{len(inv.problems)} problem(s) in {inv.path}; nothing was changed"
            if guests:
                message += f"; container {guests[0].vmid} is left as it is"
            out[inv.name] = Status(
                inv.name,
                inv.path,
                "Invalid",
                message,
                inv.revision,
                guests[0].vmid if guests else None,
                guests[0].node if guests else None,
                problems=tuple(str(p) for p in inv.problems),
            )
        for name, v in verdicts.items():
            if v.phase == "Orphaned":
                out[name] = Status(
                    name,
                    previous[name].request if name in previous else f"{name} (removed)",
                    v.phase,
                    v.message,
                    None,
                    v.vmid,
                    v.node,
                    v.address,
                )
        for name, new in list(out.items()):
            old = previous.get(name)
            if old is not None and new.same_as(old):
                out[name] = old  # unchanged: the job that first reported it still explains it
            elif new.job is None and new.phase == "Invalid":
                out[name] = self._record_invalid(new)
            elif new.job is None:
                latest = self.store.jobs(limit=1, request=name)
                out[name] = replace(new, job=latest[0].id if latest else None)
        return out

    def _record_invalid(self, new: Status) -> Status:
        """An invalid request's job: failed, with every problem in its log (once per change of the file)."""
        job_id = self.store.create_job("validate", new.name, None, {"path": new.request, "revision": new.revision})
        self.store.start_job(job_id)
        for problem in new.problems:
            self.store.log(job_id, "error", f"{new.request}: {problem}")
        self.store.finish_job(job_id, False, new.message, error="; ".join(new.problems))
        self.applier.on_job("validate", False, 0.0)
        log.warning("request invalid", request=new.name, job_id=job_id, problems=new.problems)
        return replace(new, job=job_id)

    def generated_files(
        self, source: Source, decision: Decision, statuses: Mapping[str, Status]
    ) -> dict[str, str | None]:
        """Status and Caddy files to write (text) or delete (None); only files the reconciler made are touched."""
        stems = {f.name: f.path for f in source.requests}
        wanted_status = {self.paths.status(name): s.render() for name, s in statuses.items()}
        out = changes(source.status, wanted_status, status.is_generated)

        wanted_caddy: dict[str, str] = {}
        for d in decision.valid:
            s = statuses[d.name]
            if d.exposed and d.domain and s.address and d.port:
                health = d.request.service.health if d.request.service else None
                wanted_caddy[self.paths.caddy(d.domain)] = caddy.render(
                    d.name, d.path, d.domain, s.address, d.port, health
                )
        claimed = {self.paths.caddy(d.domain): d.name for d in decision.valid if d.exposed and d.domain}
        invalid = {i.name for i in decision.invalid}

        def keep(path: str, text: bytes) -> bool:
            # An exposed request without a known address yet keeps its route; so does one whose file
            # turned invalid (a typo should not take a site down). A removed or unexposed one loses it.
            who = caddy.owner(text)
            return claimed.get(path) == who or (who in invalid and who in stems)

        out.update(changes(source.caddy, wanted_caddy, caddy.is_generated, keep))
        return out
