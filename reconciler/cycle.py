"""One reconcile pass: source (Git) -> desired -> observed -> plan -> apply (start jobs) -> report.

A pass never waits for the work it starts: it queues the jobs, writes and pushes the statuses it knows
(`Provisioning` for work in flight), and returns. A job's end brings the next pass, which observes the
result; `once` keeps passing until nothing it started is still running.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import structlog

from reconciler.apply.context import Tools
from reconciler.apply.intents import resolve_intents
from reconciler.apply.runner import Runner
from reconciler.config import Config
from reconciler.desired.claims import invalid_claims
from reconciler.desired.profile import Profile
from reconciler.desired.validate import validate
from reconciler.gateways.dns import DnsServer
from reconciler.gateways.git import Checkout
from reconciler.gateways.pct import Pct
from reconciler.gateways.proxmox import Proxmox
from reconciler.gateways.sqlite import JobStore
from reconciler.gateways.ssh import GuestSsh
from reconciler.model.desired import Desired
from reconciler.model.errors import ReconcilerError
from reconciler.model.observed import Observed
from reconciler.model.standing import Standing
from reconciler.model.vocab import GuestState, JobType, Phase, RecordType, ResourceKind
from reconciler.observe import AddressCache, ConfigCache, ZoneCache, foreign_addresses, observe
from reconciler.parse import MAX_FILE_BYTES
from reconciler.plan import Plan, needs_foreign_addresses, plan
from reconciler.plan.guard import Guard
from reconciler.report import caddy, hosts, site, status, targets
from reconciler.report.files import GeneratedPaths, HandEdits, changes, hand_edited
from reconciler.report.targets import Target
from reconciler.source import Source, read_source, routed_paths

log = structlog.get_logger("reconciler.cycle")
HAND_EDITED = "has lost the reconciler's header, so it is no longer updated"
NOT_PLAIN = "is not a plain file (a symbolic link?), so the reconciler never writes it"
FOLLOW_POLL = 5.0  # seconds between checks while `once` waits for a job to end
HOSTS_FILE_BYTES = 16 * MAX_FILE_BYTES  # a hosts file of thousands of requests; more is read as cut short
Keep = Callable[[str | None], bool]  # whether a request that wants nothing now keeps what it has (see kept)
Files = dict[str, str | None]  # path -> text to write, or None to delete


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Decision:
    """Desired, observed and the plan between them; valid holds the requests that own their domain and address
    (the refused ones, invalid files and clash losers alike, have an Invalid standing in the plan)."""

    valid: list[Desired]
    observed: Observed
    plan: Plan


@dataclass
class CycleReport:
    revision: str | None
    statuses: dict[str, Standing]
    decision: Decision
    started: dict[str, int] = field(default_factory=dict)  # request -> job queued by this pass (or run)
    commit: str | None = None
    seconds: float = 0.0
    passes: int = 1

    @property
    def phases(self) -> Counter[str]:
        return Counter(str(s.phase) for s in self.statuses.values())

    @property
    def failing(self) -> list[str]:
        return sorted(n for n, s in self.statuses.items() if s.phase.failing)


class Reconciler:
    """Runs passes for one config; the gateways and the job runner are given, so tests drive real ones."""

    def __init__(
        self,
        config: Config,
        profiles: Mapping[str, Profile],
        pve: Proxmox,
        store: JobStore,
        checkout: Checkout,
        runner: Runner,
        pct: Pct | None = None,
        dns: DnsServer | None = None,
    ) -> None:
        self.config = config
        self.profiles = profiles
        self.pve = pve
        self.store = store
        self.checkout = checkout
        self.runner = runner
        vmids = config.site.vmid_range
        self.vmids = range(vmids.low, vmids.high + 1)
        self.dns = dns
        rfc2136 = config.dns.rfc2136 if config.dns else None
        self.zones = ZoneCache(refresh=rfc2136.refresh) if rfc2136 is not None and rfc2136.axfr else None
        self.tools = Tools(
            pve,
            config.proxmox,
            pct,
            self.vmids,
            dns,
            config.dns.owner_id if config.dns else "reconciler",
            self.zones.written if self.zones is not None else _nothing,
            GuestSsh(config.provision.vm, config.provision.step_timeout) if config.provision.vm else None,
        )
        self.paths = GeneratedPaths(config.paths, config.prometheus.targets)
        self.configs = ConfigCache(refresh=config.proxmox.config_refresh)
        self.addresses = AddressCache(refresh=config.proxmox.address_refresh)
        self.site_text = site.render(config.site, profiles)  # the site file: fixed for this config and profiles
        self.hand_edits = HandEdits()  # generated files found edited by hand (reconciler_generated_files_hand_edited)

    def close(self) -> None:
        self.checkout.repo.close()

    def read_source(self) -> Source:
        """Fetch, fast-forward and read the checkout (see source.read_source)."""
        return read_source(self.checkout, self.config)

    def decide(self, source: Source) -> Decision:
        """Validate, observe and plan; reads only."""
        valid, checked = validate(source.requests, self.profiles, self.config.site)
        in_flight, attempts, settling = self.runner.snapshot()  # before Proxmox is asked: see observe
        adopting = [d.life.vmid for d in valid if d.life.adopt and d.life.vmid is not None]
        observed = observe(self.pve, self.store, in_flight, attempts, settling, self.configs, adopting, self.addresses)
        if self.zones is not None and self.dns is not None and self.config.dns is not None:
            observed = replace(observed, zones=self.zones.views(self.dns, self.config.dns.zones))
        now = self.runner.clock()
        if needs_foreign_addresses(valid, observed, now):
            # Addresses on guests the reconciler does not own cost a call each: only when about to use one.
            observed = replace(observed, foreign_ips=foreign_addresses(self.pve, observed))
        # Entries refused before parsing (links, folders, bad or doubled names) stand beside the invalid files.
        invalid = sorted([*checked, *source.refused], key=lambda i: i.name)
        decision = plan(
            valid,
            invalid,
            observed,
            self.vmids,
            service_domains=caddy.domains(source.caddy),
            # Every problem of a file at once: one with errors takes part in the clash rule with what its fields
            # still say, so its clash is in its status beside the rest (as `validate` says it).
            claimed=invalid_claims(source.requests, checked),
            request_names=[f.name for f in source.requests] + [i.name for i in source.refused],
            now=now,
            setup_on=self.tools.pct is not None,
            vm_setup_on=self.tools.guest_ssh is not None,
            guard=Guard(
                self.config.guard.max_share,
                self.config.guard.confirm_file,
                source.requests_revision,
                source.confirmed,
            ),
            previous=source.previous,
            task_timeout=self.config.proxmox.task_timeout,
            dns=self.config.dns,
            dns_writes=self.dns is not None,
        )
        # Requests refused for a clash join the invalid ones: only the rest own their domain and route.
        refused = {n for n, s in decision.standings.items() if s.phase == Phase.INVALID}
        return Decision([d for d in valid if d.name not in refused], observed, decision)

    def cycle(self) -> CycleReport:
        """One pass; raises GitError or ProxmoxError only when the pass as a whole cannot run."""
        began = time.monotonic()
        source = self.read_source()
        decision = self.decide(source)
        resolve_intents(self.store, decision.observed)
        self._note_addresses(decision.observed)
        if decision.plan.held is not None:
            log.warning("mass change held", reason=decision.plan.held.reason)
        actions = decision.plan.actions
        started = self.runner.submit(actions, self.tools)
        deferred = {a.name: a.describe() for a in actions if a.name not in started}
        statuses = self.statuses(source, decision, started, deferred)
        report = CycleReport(source.revision, statuses, decision, started)
        summary = ", ".join(f"{n} {p}" for p, n in sorted(report.phases.items()))
        report.commit = self.checkout.publish(
            self.generated_files(source, decision, statuses), f"reconciler: {summary or 'no requests'}"
        )
        report.seconds = time.monotonic() - began
        log.info(
            "pass done",
            revision=source.revision,
            commit=report.commit,
            started=len(started),
            seconds=round(report.seconds, 3),
            **{p.lower(): n for p, n in report.phases.items()},
        )
        return report

    def _note_addresses(self, observed: Observed) -> None:
        """Keep the addresses read this pass in the inventory: a lease that moved is the one known from now on."""
        for name in observed.held:
            held = observed.container(name)
            address = observed.addresses.get(held.vmid) if held is not None else None
            if held is not None and address is not None and address != held.address:
                log.info("address changed", request=name, vmid=held.vmid, before=held.address, now=address)
                self.store.set_address(name, ResourceKind.LXC, held.key, address)

    def once(self, follow: bool = True) -> CycleReport:
        """Pass until nothing this run started is still running, pushing statuses as they become known.

        Failures of earlier runs are tried again. follow False: one pass, then wait for the jobs it
        started (their results are in the job log; the next run or the daemon reports them).
        """
        self.runner.forget_failures()
        began = time.monotonic()
        started: dict[str, int] = {}
        passes = 0
        try:
            while True:
                seen = self.runner.finished
                report = self.cycle()
                passes += 1
                started.update(report.started)
                if not follow:
                    self.runner.wait_idle(float("inf"))
                    break
                if self.runner.busy or self.runner.finished != seen or report.started:
                    while self.runner.wait(seen, FOLLOW_POLL) == seen and self.runner.busy:
                        pass
                    continue
                # Nothing runs; a request whose job just ended may still wait for Proxmox to show its result.
                settling = [
                    n
                    for n in report.decision.observed.settling
                    if (st := report.statuses.get(n)) is not None and st.phase == Phase.PROVISIONING
                ]
                until = self.runner.settled_at(settling)
                if until is None:
                    break
                self.runner.wait(seen, max(0.0, until - self.runner.clock()))
        except ReconcilerError:
            self.runner.wait_idle(float("inf"))  # what was started ends and is recorded before the error is said
            raise
        report.started, report.passes = started, passes
        report.seconds = time.monotonic() - began
        return report

    def statuses(
        self,
        source: Source,
        decision: Decision,
        started: Mapping[str, int],
        deferred: Mapping[str, str],
        record: bool = True,
    ) -> dict[str, Standing]:
        """The status of every request file, and of owned guests whose request is gone.

        record: give a newly invalid request its `validate` job (a plan that only reads passes False).
        """
        computed = status.compute(
            decision.plan.standings,
            source.previous,
            started,
            deferred,
            self.services(decision),
            decision.observed.last_jobs,
        )
        if not record:
            return computed.by_name
        for name in computed.to_record:
            computed.by_name[name] = self._record_invalid(computed.by_name[name])
        return computed.by_name

    def services(self, decision: Decision) -> dict[str, str]:
        """Request -> its Caddy service file, for each valid exposed request with a domain."""
        return {
            d.name: self.paths.caddy(d.domain)
            for d in decision.valid
            if d.exposed and d.domain and d.life.state != GuestState.ABSENT
        }

    def _record_invalid(self, new: Standing) -> Standing:
        """An invalid request's job: failed, with every problem in its log (once per change of the file)."""
        job_id = self.store.create_job(
            JobType.VALIDATE, new.name, None, {"path": new.request, "revision": new.revision}
        )
        self.store.start_job(job_id)
        for problem in new.problems:
            self.store.log(job_id, "error", f"{new.request}: {problem}")
        self.store.finish_job(job_id, False, new.message, error="; ".join(new.problems))
        self.runner.on_job(JobType.VALIDATE, False, 0.0)
        log.warning("request invalid", request=new.name, job_id=job_id, problems=new.problems)
        return replace(new, job=job_id)

    def _single_file(
        self, path: str, build: Callable[[bytes | None], str], owned: Callable[[bytes], bool], limit: int
    ) -> tuple[dict[str, str | None], dict[str, tuple[bytes, str]]]:
        """A single generated file (the site file, the hosts file): its change when its content differs from what
        build() makes of the one there; and, when it is there without the reconciler's header or is no plain
        file, that finding (it is left as it is). limit: the bytes read of the one there."""
        existing = self.checkout.read_file(path, limit)
        if existing is None and (self.checkout.link_in_path(path) or os.path.lexists(self.checkout.path / path)):
            # A link (in its path or itself), a folder or a pipe: never written through.
            return {}, {path: (b"not a plain file", NOT_PLAIN)}
        current = {path: existing} if existing is not None else {}
        found = hand_edited(current, [path], owned)
        text = build(existing if existing is not None and owned(existing) else None)
        return changes(current, {path: text}, owned), {p: (t, HAND_EDITED) for p, t in found.items()}

    def _targets(self, source: Source, decision: Decision, statuses: Mapping[str, Standing], keep: Keep) -> Files:
        """One file_sd file per monitored request whose container is Ready (prometheus.targets)."""
        if self.config.prometheus.targets is None:
            return {}
        wanted: dict[str, str] = {}
        for d in decision.valid:
            s = statuses[d.name]
            if not (d.monitoring and d.scrape.exporters and d.life.state == GuestState.PRESENT):
                continue
            if s.phase == Phase.READY and s.address and s.vmid is not None and s.node:
                guest = decision.observed.by_vmid.get(s.vmid)
                target = Target(
                    d.name,
                    s.address,
                    d.scrape.exporters,
                    s.vmid,
                    s.node,
                    guest.name if guest else d.container.hostname,
                    tags=guest.tags if guest else (),
                    labels=dict(d.scrape.labels),
                )
                wanted[self.paths.target(d.name)] = targets.render(target)
        # A monitored request not Ready (yet, or again) keeps its target, as an exposed one keeps its route.
        scraped = {d.name for d in decision.valid if d.monitoring and d.life.state == GuestState.PRESENT}

        def kept(path: str, text: bytes) -> bool:
            who = targets.owner(text)
            return who in scraped or keep(who)

        return changes(source.targets, wanted, targets.is_generated, kept)

    def _hosts(
        self, decision: Decision, statuses: Mapping[str, Standing], keep: Keep
    ) -> tuple[dict[str, str | None], dict[str, tuple[bytes, str]]]:
        """The hosts-format file (dns.hosts_file): every request's names at its address, once it is Ready."""
        dns = self.config.dns
        if dns is None or dns.hosts_file is None:
            return {}, {}
        named = {d.name: d for d in decision.valid if d.dns and d.life.state != GuestState.ABSENT}

        def build(existing: bytes | None) -> str:
            before = hosts.parse(existing) if existing is not None else {}
            entries = []
            for name, d in sorted(named.items()):
                records = decision.plan.records.get(name)
                address = next((r.value for r in records or () if r.type == RecordType.A), None)
                if records and address:
                    entries.append(hosts.Entry(name, d.path, address, tuple(r.name.rstrip(".") for r in records)))
                elif name in before:  # not Ready (yet, or again): it keeps the names it had
                    entries.append(hosts.Entry(name, d.path, *before[name]))
            entries += [
                hosts.Entry(n, statuses[n].request if n in statuses else n, *e)
                for n, e in before.items()
                if n not in named and keep(n)
            ]
            return hosts.render(entries)

        return self._single_file(dns.hosts_file, build, hosts.is_generated, HOSTS_FILE_BYTES + 1)

    def generated_files(
        self, source: Source, decision: Decision, statuses: Mapping[str, Standing]
    ) -> dict[str, str | None]:
        """Status and Caddy files to write (text) or delete (None); only files the reconciler made are touched.

        A file it would write that lost its header (edited by hand) or is no plain file (a link) is left alone and
        reported: a warning when that is new or changed, and in hand_edits for the metric.
        """
        stems = {f.name for f in source.requests} | {i.name for i in source.refused}
        wanted_status = {self.paths.status(name): status.render(s) for name, s in statuses.items()}
        out = changes(source.status, wanted_status, status.is_generated)

        wanted_caddy: dict[str, str] = {}
        for d in decision.valid:
            s = statuses[d.name]
            # Routed once the workload answers (Ready); until then a route it already has stays (see keep).
            if d.exposed and d.domain and s.address and d.port and s.phase == Phase.READY:
                health = d.service.health if d.service else None
                wanted_caddy[self.paths.caddy(d.domain)] = caddy.render(
                    d.name, d.path, d.domain, s.address, d.port, health
                )
        claimed = {path: name for name, path in self.services(decision).items()}
        invalid = {n for n, s in statuses.items() if s.phase == Phase.INVALID}
        held = decision.plan.held.orphans if decision.plan.held is not None else frozenset()

        def kept(who: str | None) -> bool:
            # A request whose file turned invalid keeps what it had (a typo should not take a site down), and
            # so does one whose removal the mass-change guard holds back. A removed one loses it.
            return (who in invalid and who in stems) or who in held

        def keep(path: str, text: bytes) -> bool:
            # An exposed request without a known address yet keeps its route too; an unexposed one loses it.
            who = caddy.owner(text)
            return claimed.get(path) == who or kept(who)

        out.update(changes(source.caddy, wanted_caddy, caddy.is_generated, keep))
        out.update(self._targets(source, decision, statuses, kept))
        site_limit = max(MAX_FILE_BYTES, len(self.site_text.encode())) + 1
        site_changes, found = self._single_file(
            self.paths.site, lambda _: self.site_text, site.is_generated, site_limit
        )
        hosts_changes, hosts_found = self._hosts(decision, statuses, kept)
        out.update(site_changes | hosts_changes)
        self._report_hand_edits(source, wanted_status, out, found | hosts_found)
        return out

    def _report_hand_edits(
        self,
        source: Source,
        wanted_status: Mapping[str, str],
        out: dict[str, str | None],
        more: Mapping[str, tuple[bytes, str]],
    ) -> None:
        """Leave generated files edited by hand (or replaced by a link) as they are, and say so once per change.

        more: other generated files found so (path -> (content, reason)): the site file."""
        found = hand_edited(source.status, wanted_status, status.is_generated)
        found |= hand_edited(source.caddy, routed_paths(source.requests, self.paths), caddy.is_generated)
        reasons = dict.fromkeys(found, HAND_EDITED)
        for path in sorted(source.not_plain & (set(out) | set(wanted_status))):
            out.pop(path, None)  # never written through: a link could point at a request or outside the checkout
            found[path] = b"not a plain file"
            reasons[path] = NOT_PLAIN
        for path, (text, reason) in more.items():
            found[path], reasons[path] = text, reason
        for path in self.hand_edits.update(found):
            log.warning("generated file edited by hand", path=path, reason=reasons[path], fix="remove the file")
