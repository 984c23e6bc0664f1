"""Wire a config to real gateways: profiles, Proxmox (secret from the environment), Git, SQLite, the job runner.

The daemon's runtime: the lock, the job database and the runner live as long as the process; the Reconciler
(config, profiles, Proxmox and Git) can be rebuilt by a reload while jobs keep running. The planner's
(`reconciler plan`): no lock, a throw-away clone of the remote, the job database read-only, no job started.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import structlog
from pydantic import ValidationError

from reconciler.apply.runner import Heartbeat, JobHook, Runner
from reconciler.config import GIT_TOKEN_ENV, Config, GitConfig, read_secret, token_secret
from reconciler.cycle import Decision, Reconciler
from reconciler.desired.profile import Profile, builtin_profiles_dir, load_profiles
from reconciler.gateways.dns import DnsError, DnsServer
from reconciler.gateways.git import Checkout
from reconciler.gateways.pct import Pct
from reconciler.gateways.proxmox import Proxmox, RequestHook
from reconciler.gateways.sqlite import JobStore
from reconciler.lock import CheckoutLock
from reconciler.model.desired import Invalid, RequestFile
from reconciler.model.errors import ConfigError, GitError, StateError
from reconciler.model.vocab import Transport
from reconciler.source import Source, read_request_folder

log = structlog.get_logger("reconciler.runtime")


def profiles_for(config: Config) -> dict[str, Profile]:
    """The profiles the config names (or the shipped ones), checked against the site's templates."""
    return load_profiles(config.profiles or builtin_profiles_dir(), set(config.site.templates))


def build_reconciler(
    config: Config,
    environ: Mapping[str, str],
    store: JobStore,
    runner: Runner,
    on_request: RequestHook | None = None,
) -> Reconciler:
    """A Reconciler for this config; raises ConfigError for a missing or malformed secret or bad profiles."""
    secret = token_secret(environ)
    profiles = profiles_for(config)
    if not config.proxmox.verify_ssl:
        _without_tls_verification(config)
    pve = Proxmox(config.proxmox, secret.reveal(), on_request=on_request)
    pct = Pct(config.provision) if config.provision.transport != Transport.OFF else None
    return Reconciler(
        config, profiles, pve, store, Checkout(config.git, environ), runner, pct, dns_server(config, environ)
    )


def dns_server(config: Config, environ: Mapping[str, str]) -> DnsServer | None:
    """The DNS server of dns.rfc2136, with its TSIG key from the environment; None when none is configured."""
    rfc2136 = config.dns.rfc2136 if config.dns is not None else None
    if rfc2136 is None:
        return None
    secret = read_secret(rfc2136.key_secret_env, environ)
    if secret is None:
        raise ConfigError(
            "environment", [f"{rfc2136.key_secret_env} is not set (the TSIG key's secret, for dns.rfc2136)"]
        )
    try:
        return DnsServer(
            rfc2136.server,
            rfc2136.port,
            rfc2136.key_name,
            rfc2136.key_algorithm,
            secret,
            rfc2136.timeout,
            rfc2136.key_secret_env,
        )
    except DnsError as exc:
        raise ConfigError("environment", [exc.reason]) from None


def check_secrets(environ: Mapping[str, str], config: Config | None = None) -> None:
    """Read every secret the environment gives the reconciler, so a missing or malformed one is said before
    anything is opened (each is registered with the log scrubber as it is read)."""
    token_secret(environ)
    read_secret(GIT_TOKEN_ENV, environ)
    if config is not None:
        dns_server(config, environ)


def _without_tls_verification(config: Config) -> None:
    """Say where a Reconciler is built (at start, and at a reload that keeps it so) that the Proxmox API's
    certificate is not checked; urllib3's own warning on every call is silenced (proxmoxer does it)."""
    log.warning(
        "proxmox tls verification off",
        host=config.proxmox.host,
        hint="anyone on the path can read the token: set proxmox.verify_ssl true and proxmox.ca_file",
    )


@dataclass
class Runtime:
    reconciler: Reconciler
    store: JobStore
    runner: Runner
    lock: CheckoutLock

    def close(self) -> None:
        """Stop the runner (running tasks get the stop grace, then are let go), then release everything."""
        self.runner.stop()
        self.runner.wait_idle(self.runner.stop_grace + 10)
        self.reconciler.close()
        self.store.close()
        self.lock.release()


def open_runtime(
    config: Config,
    environ: Mapping[str, str] | None = None,
    on_job: JobHook | None = None,
    on_request: RequestHook | None = None,
    on_done: Callable[[], None] | None = None,
    heartbeat: Heartbeat | None = None,
) -> Runtime:
    """Everything one process needs to run passes, holding the checkout's lock.

    Raises ConfigError for a missing secret or bad profiles, AlreadyRunning when another process holds the lock.
    """
    env = dict(os.environ if environ is None else environ)
    check_secrets(env, config)  # a missing or malformed secret is said before anything is opened
    profiles_for(config)
    lock = CheckoutLock(config.git.checkout).acquire()
    try:
        store = JobStore(config.state.database, busy_timeout=config.state.busy_timeout)
        # Jobs still marked running were cut short by a crash or a kill: say so rather than leave them hanging.
        store.interrupt_running("interrupted: the reconciler stopped before the job finished")
        runner = Runner(store, on_job=on_job, on_done=on_done, heartbeat=heartbeat)
        runner.configure(config)
        reconciler = build_reconciler(config, env, store, runner, on_request)
    except BaseException:
        lock.release()
        raise
    return Runtime(reconciler, store, runner, lock)


# The planner: `reconciler plan`, read-only beside a running daemon.

NO_HISTORY = (
    "planning without the job history: DHCP addresses found, setups done and values last applied are not"
    " known, so the plan may show address lookups and setups the daemon would not run"
)


@dataclass(frozen=True)
class Preview:
    """What the next pass would do, found by reading only: its plan and the generated files it would change.

    requests_from says where the request files came from when not from the configured branch (`branch X`, or
    the directory given), requests_revision that branch's commit.
    """

    source: Source
    decision: Decision
    files: dict[str, str | None]
    requests_from: str | None = None
    requests_revision: str | None = None


class Planner:
    """A Reconciler that only reads: its own clone of the remote in a temporary directory (removed by close),
    the daemon's job database opened read-only (or an empty one beside the clone), and a runner that is never
    given a job. It holds no lock, so it runs beside the daemon and changes nothing the daemon owns.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        store: JobStore,
        runner: Runner,
        workdir: tempfile.TemporaryDirectory[str],
        history: str | None,
        ref: Checkout | None,
    ) -> None:
        self.reconciler = reconciler
        self.store = store
        self.runner = runner
        self.workdir = workdir
        self.history = history  # why the job history is not read; None when it is
        self.ref = ref

    def preview(
        self,
        requests: Sequence[RequestFile] | None = None,
        where: str | None = None,
        refused: Sequence[Invalid] = (),
    ) -> Preview:
        """Read the source (the request files from the ref, or these ones read from the directory `where`, with
        its entries refused unread), decide, and compute the statuses and generated files the pass would write;
        no job is recorded."""
        reconciler = self.reconciler
        requests_from = requests_revision = None
        # Before the configured branch is cloned: a branch that is not there is said at once.
        if self.ref is not None and requests is None and self.ref.remote_tip() is None:
            raise GitError("ls-remote", f"the remote has no branch {self.ref.config.branch}")
        source = reconciler.read_source()
        if requests is not None:
            source = self._from_directory(source, requests, refused)
            requests_from = where or "the directory given"
        elif self.ref is not None:
            requests_revision = self.ref.sync()
            # The branch's entries refused unread stand in place of the configured branch's, by the same rules.
            found = read_request_folder(self.ref, reconciler.config.paths.requests)
            source = replace(source, requests=found.files, refused=found.refused, requests_revision=found.revision)
            requests_from = f"branch {self.ref.config.branch}"
        decision = reconciler.decide(source)
        # No `validate` job is recorded for a new invalid request: a plan writes nothing.
        statuses = reconciler.statuses(source, decision, {}, {}, record=False)
        files = reconciler.generated_files(source, decision, statuses)
        return Preview(source, decision, files, requests_from, requests_revision)

    def _from_directory(self, source: Source, files: Sequence[RequestFile], refused: Sequence[Invalid] = ()) -> Source:
        """The source with these request files and refused entries (screened by the rules of desired.files) in
        place of the branch's, at the paths they would have in the repository. A file equal to the branch's keeps
        its revision (so its status does not change for nothing), as does an entry refused for the same reasons
        as the branch's; a new or changed one has none yet."""
        folder = PurePosixPath(self.reconciler.config.paths.requests)
        known = {f.path: f for f in source.requests}
        placed = []
        for item in files:
            path = str(folder / PurePosixPath(item.path).name)
            same = known.get(path)
            revision = same.revision if same is not None and same.text == item.text else None
            placed.append(RequestFile(path, item.name, item.text, revision))
        placed.sort(key=lambda f: f.path)
        # A refused entry is never read, so "the same" is the same name, path and reasons as the branch's.
        was = {(i.name, i.path, i.problems): i.revision for i in source.refused}
        screened = tuple(
            sorted((replace(i, revision=was.get((i.name, i.path, i.problems))) for i in refused), key=lambda i: i.name)
        )
        same_files = [(f.path, f.text) for f in placed] == [(f.path, f.text) for f in source.requests]
        unchanged = same_files and [(i.name, i.path) for i in screened] == [(i.name, i.path) for i in source.refused]
        return replace(
            source,
            requests=placed,
            refused=screened,
            requests_revision=source.requests_revision if unchanged else None,
        )

    def close(self) -> None:
        """Close the clones and the database, and remove the temporary directory."""
        try:
            self.reconciler.close()
            if self.ref is not None:
                self.ref.repo.close()
            self.store.close()
        finally:
            self.workdir.cleanup()


def _history(config: Config, scratch: Path) -> tuple[JobStore, str | None]:
    """The daemon's job database opened read-only; else an empty one in scratch, with the reason."""
    path = config.state.database
    try:
        store = JobStore.open_readonly(path, busy_timeout=config.state.busy_timeout)
    except StateError as exc:
        reason = f"cannot read the job database {exc.path}: {exc.reason}"
    else:
        if store is not None:
            return store, None
        reason = f"no job database at {path}"
    return JobStore(scratch / "jobs.sqlite"), f"{reason}; {NO_HISTORY}"


def open_planner(config: Config, environ: Mapping[str, str] | None = None, ref: str | None = None) -> Planner:
    """A Planner for this config: the configured branch (or ref's request files) in a throw-away clone.

    Raises ConfigError for a missing secret, bad profiles or a ref that is no branch name.
    """
    env = dict(os.environ if environ is None else environ)
    check_secrets(env, config)
    profiles_for(config)
    ref_git = None
    if ref is not None and ref != config.git.branch:
        try:
            ref_git = GitConfig.model_validate({**config.git.model_dump(), "branch": ref})
        except ValidationError:
            raise ConfigError("--ref", [f"{ref!r} is not a branch name"]) from None
    workdir = tempfile.TemporaryDirectory(prefix="reconciler-plan-")
    scratch = Path(workdir.name)
    store = None
    try:
        store, history = _history(config, scratch)
        runner = Runner(store)  # never given an action: it starts no job
        planning = config.model_copy(update={"git": config.git.model_copy(update={"checkout": scratch / "clone"})})
        reconciler = build_reconciler(planning, env, store, runner)
        checkout = Checkout(ref_git.model_copy(update={"checkout": scratch / "ref"}), env) if ref_git else None
    except BaseException:
        if store is not None:
            store.close()
        workdir.cleanup()
        raise
    return Planner(reconciler, store, runner, workdir, history, checkout)
