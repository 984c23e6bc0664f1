"""The `reconciler` command line: validate, plan, once, jobs, schema, demo."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from reconciler import __version__, logs
from reconciler.config import (
    DEFAULT_CONFIG,
    GIT_TOKEN_ENV,
    TOKEN_SECRET_ENV,
    TSIG_SECRET_ENV,
    Config,
    PathsConfig,
    load_config,
    read_secret,
    refuse_open_files,
)
from reconciler.desired.files import Entry, Refused, display, sort_out, unopened, unsafe_name
from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.desired.request import json_schema
from reconciler.desired.validate import validate
from reconciler.gateways.folder import list_entries, read_plain, read_yaml_files
from reconciler.lock import AlreadyRunning
from reconciler.model.desired import Invalid, RequestFile
from reconciler.model.errors import ConfigError, GitError, ProxmoxError, StateError
from reconciler.model.problem import Problem
from reconciler.model.vocab import Phase
from reconciler.parse import MAX_FILE_BYTES
from reconciler.plan.conflicts import Claims, resolve_clashes
from reconciler.report import caddy, status

# Commands import what they need when they run: `validate` (a pre-commit hook) stays quick and needs no
# proxmoxer, git or the demo extra.
EXIT_FAILED = 1  # validate, once: some request is Failed or Invalid; jobs: no such job
EXIT_ERROR = 2  # validate, once, jobs, run: the command could not run (config, Git, Proxmox, the database)
# `plan` exits as `terraform plan -detailed-exitcode`, for CI: 0 nothing would change, 2 something would (an
# action, or a file to write or remove), 1 the command could not run (a usage error included).
EXIT_PLAN_CHANGES = 2
EXIT_PLAN_ERROR = 1


def _request_files(targets: Sequence[str]) -> tuple[list[RequestFile], list[Invalid]]:
    """The request files to validate, and the entries refused unread, by the daemon's rules (desired.files).

    A directory is listed (never walked, links never followed); a file named on its own is judged with its
    folder's listing, so a duplicate or a case collision beside it is refused as the daemon refuses it.
    """
    wanted: dict[Path, set[str] | None] = {}  # folder -> the names asked for; None: all of them
    for target in targets or ["requests"]:
        path = Path(target)
        try:
            found = os.lstat(path)
        except OSError as exc:
            raise ConfigError(target, [f"cannot read: {exc.strerror}"]) from None
        if stat.S_ISDIR(found.st_mode):
            wanted[path] = None
        elif (names := wanted.setdefault(path.parent, set())) is not None:
            names.add(path.name)  # a link is judged by its folder's listing: refused, never followed
    files: list[RequestFile] = []
    refused: list[Invalid] = []
    for folder, only in wanted.items():
        read, odd = _screen(folder, str(folder), only)
        files += read
        refused += odd
    return files, refused


def _screen(directory: Path, shown: str, only: set[str] | None = None) -> tuple[list[RequestFile], list[Invalid]]:
    """The request files directly in a directory and its entries refused unread, as a pass sorts out requests/.

    shown: the folder as messages name it; only: the entry names to report (all when None). The directory is
    opened without following a link; each file is opened relative to it, O_NOFOLLOW, at most MAX_FILE_BYTES + 1
    bytes read (load_yaml refuses more).
    """
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(directory):
            raise ConfigError(
                shown, ["the folder is a symbolic link; the reconciler reads only real folders"]
            ) from None
        raise ConfigError(shown, [f"cannot read: {exc.strerror}"]) from None
    try:
        entries = {name: Entry.of(found.st_mode, found.st_size) for name, found in list_entries(fd).items()}
        sorted_out = sort_out(shown, entries)
        refused = [r for r in sorted_out.refused if only is None or only & set(r.entries)]
        files = []
        for candidate in sorted_out.candidates:
            if only is not None and candidate.entry not in only:
                continue
            text = read_plain(candidate.entry, fd, MAX_FILE_BYTES + 1)
            if text is None:
                refused.append(unopened(shown, candidate))
            else:
                files.append(RequestFile(str(directory / candidate.entry), candidate.name, text))
    finally:
        os.close(fd)
    if only is not None:  # a plain file named on its own that the daemon would ignore (not .yaml or .yml)
        judged = {c.entry for c in sorted_out.candidates} | {e for r in refused for e in r.entries}
        for name in sorted(only - judged):
            problem = Problem("", f"{display(shown, name)}: a request file's name ends in .yaml or .yml")
            refused.append(Refused(unsafe_name([name]), (name,), (problem,)))
    return files, [r.invalid(shown, {}) for r in refused]


def offline_claims(files: Sequence[RequestFile], paths: PathsConfig) -> Claims:
    """What the repository's own generated files say exists: who is provisioned (status files with a VMID)
    and which domains the Caddy files hold. Found beside the requests folder, as the config lays them out."""
    depth = len(Path(paths.requests).parts)
    roots = set()
    for file in files:
        folder = Path(file.path).parent
        if folder.parts[-depth:] == Path(paths.requests).parts:
            roots.add(Path(*folder.parts[:-depth]) if len(folder.parts) > depth else Path("."))
    provisioned: set[str] = set()
    domains: dict[str, str | None] = {}
    for root in roots:
        for text in read_yaml_files(root / paths.status, MAX_FILE_BYTES + 1).values():
            parsed = status.parse(text)
            if parsed is not None and parsed.vmid is not None and parsed.phase != Phase.ORPHANED:
                provisioned.add(parsed.name)
        domains.update(caddy.domains(read_yaml_files(root / paths.caddy, MAX_FILE_BYTES + 1)))
    return Claims(domains, frozenset(provisioned))


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    """Check request files offline; one `file:field: reason` line per problem."""
    config = load_config(args.config) if args.config else None
    if config is not None:
        profiles = load_profiles(config.profiles or builtin_profiles_dir(), set(config.site.templates))
    else:
        profiles = load_profiles(builtin_profiles_dir())
    files, unread = _request_files(args.paths)
    valid, invalid = validate(files, profiles, config.site if config else None)
    # The same clash rule as every pass, with what the repository's status and Caddy files say exists.
    _, refused = resolve_clashes(valid, offline_claims(files, config.paths if config else PathsConfig()))
    invalid = sorted([*invalid, *refused, *unread], key=lambda i: i.path)
    screened = {id(i) for i in unread}
    for item in invalid:
        for problem in item.problems:
            if id(item) in screened:  # refused unread: the reason names the entries itself
                out.write(f"{problem.reason}\n")
                continue
            where = f"{item.path}:{problem.field}" if problem.field else item.path
            out.write(f"{where}: {problem.reason}\n")
    if not files and not unread:
        out.write("no request files found\n")
    elif not invalid:
        out.write(f"{len(files)} request file(s) valid\n")
    return EXIT_FAILED if invalid else 0


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config or DEFAULT_CONFIG)


def _starting(args: argparse.Namespace) -> tuple[Config, dict[str, str]]:
    """The config of a process that will act (run, once), after the start-up checks, and its environment.

    The config file may not be open to others nor a key file to anyone but its owner. Each secret is read once
    from the environment (stripped, refused with a control character in it, registered with the log scrubber);
    the environment returned holds the clean values. They leave the process's own environment, so that no child
    inherits one: not git (GitPython runs `git version` as it is imported, with os.environ), not ssh, not a hook.
    """
    path = args.config or DEFAULT_CONFIG
    config = load_config(path)
    refuse_open_files(path, config)
    environ = dict(os.environ)
    for name in (TOKEN_SECRET_ENV, GIT_TOKEN_ENV, TSIG_SECRET_ENV, config.http.webhook_secret_env):
        secret = read_secret(name, environ)
        os.environ.pop(name, None)
        if secret is None:
            environ.pop(name, None)
        else:
            environ[name] = secret.reveal()
    return config, environ


def _plan_requests(directory: Path, folder: str) -> tuple[list[RequestFile], list[Invalid]]:
    """The request files directly in a directory (a pull request's working tree) and the entries refused
    unread, sorted out as a pass sorts out the repository's folder (named folder in messages)."""
    try:
        found = os.lstat(directory)
    except OSError:
        found = None
    if found is not None and stat.S_ISLNK(found.st_mode):
        raise ConfigError("--requests", [f"{directory} is a symbolic link; the reconciler does not follow links"])
    if found is None or not stat.S_ISDIR(found.st_mode):
        raise ConfigError("--requests", [f"{directory} is not a directory"])
    return _screen(directory, folder)


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    """Print what the next pass would do, changing nothing: 0 nothing would change, 2 something would."""
    from reconciler.report.plan_text import PlanView, changes, render_json, render_text
    from reconciler.runtime import open_planner

    config = _config(args)
    requests, unread = _plan_requests(args.requests, config.paths.requests) if args.requests is not None else (None, [])
    planner = open_planner(config, ref=args.ref)
    try:
        if planner.history is not None:
            sys.stderr.write(f"reconciler: {planner.history}\n")
        where = str(args.requests) if args.requests is not None else None
        preview = planner.preview(requests, where=where, refused=unread)
    finally:
        planner.close()
    plan = preview.decision.plan
    view = PlanView(
        branch=config.git.branch,
        revision=preview.source.revision,
        request_count=len(preview.source.requests),
        actions=plan.actions,
        standings=plan.standings,
        files=preview.files,
        caddy_files=preview.source.caddy,
        caddy_dir=config.paths.caddy,
        transport=config.provision.transport,
        held=plan.held.reason if plan.held is not None else None,
        requests_from=preview.requests_from,
        requests_revision=preview.requests_revision,
        history=planner.history is None,
    )
    out.write(render_json(view) if args.json else render_text(view))
    return EXIT_PLAN_CHANGES if changes(view) else 0


def cmd_once(args: argparse.Namespace, out: TextIO) -> int:
    """Run one cycle; non-zero when any request is Failed or Invalid."""
    config, environ = _starting(args)  # before GitPython is imported: see _starting
    from reconciler.runtime import open_runtime

    runtime = open_runtime(config, environ)
    try:
        report = runtime.reconciler.once(follow=not args.no_follow)
    finally:
        runtime.close()
    for name, st in sorted(report.statuses.items()):
        out.write(f"{name}: {st.phase}: {st.message}" + (f" (job {st.job})" if st.job else "") + "\n")
        for problem in st.problems:
            out.write(f"  {problem}\n")
    out.write(f"commit {report.commit}\n" if report.commit else "no changes to commit\n")
    return EXIT_FAILED if report.failing else 0


def cmd_jobs(args: argparse.Namespace, out: TextIO) -> int:
    """List recent jobs, or show one job with its log."""
    from reconciler.gateways.sqlite import JobStore

    store = JobStore(_config(args).state.database)
    try:
        if args.id is None:
            for job in store.jobs(limit=args.limit, request=args.request):
                out.write(
                    f"{job.id:>6}  {job.created_at}  {job.status:<9}  {job.type:<12}  {job.request:<24}"
                    f"  {job.error_message or job.summary}\n"
                )
            return 0
        one = store.job(args.id)
        if one is None:
            out.write(f"no job {args.id}\n")
            return EXIT_FAILED
        out.write(
            f"job {one.id}: {one.type} {one.request} ({one.profile or '-'}): {one.status}\n"
            f"created {one.created_at}, started {one.started_at}, finished {one.finished_at}\n"
        )
        if one.error_message:
            out.write(f"error: {one.error_message}\n")
        for line in store.logs(one.id):
            out.write(f"{line.timestamp} {line.level:<5} {line.message}\n")
        return 0
    finally:
        store.close()


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    profiles = load_profiles(args.profiles or builtin_profiles_dir())
    out.write(json_schema(profiles))
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """The long-running daemon."""
    _, environ = _starting(args)  # before GitPython is imported: see _starting
    from reconciler.daemon.loop import Daemon

    return Daemon(args.config or DEFAULT_CONFIG, environ).run()


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from reconciler.demo import run_demo

    return run_demo(out, keep=args.keep)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors exit with usage_error: 2 as argparse's do, but 1 under `plan`,
    whose 2 means that something would change."""

    usage_error = 2

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_error, f"{self.prog}: error: {message}\n")


def parser() -> _Parser:
    top = _Parser(prog="reconciler", description="GitOps reconciler for Proxmox VE homelabs")
    top.add_argument("--version", action="version", version=f"reconciler {__version__}")
    top.add_argument("--log-format", choices=("json", "console"), help="default: console on a terminal")
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, fn: object, help_text: str) -> _Parser:
        p: _Parser = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    p = command("validate", cmd_validate, "check request files offline (for CI and pre-commit)")
    p.add_argument("paths", nargs="*", help="files or directories (default: requests)")
    p.add_argument("--config", type=Path, help="check the site's approved values and profiles from this config")
    p = command("plan", cmd_plan, "print what the next pass would do, changing nothing (beside a running daemon)")
    p.usage_error = EXIT_PLAN_ERROR
    p.epilog = "exit status: 0 nothing would change, 2 something would (an action or a file), 1 an error"
    p.add_argument("--config", type=Path, help=f"default {DEFAULT_CONFIG}")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--ref", metavar="BRANCH", help="plan the request files of this branch of the remote")
    source.add_argument(
        "--requests",
        type=Path,
        metavar="DIR",
        help="plan the request files in this directory (a pull request's working tree, e.g. requests/)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    for name, fn, text in (
        ("once", cmd_once, "reconcile until nothing started is still running, pushing statuses as they are known"),
        ("run", cmd_run, "run the daemon: reconcile at start, on a timer, a webhook or a watched change"),
    ):
        p = command(name, fn, text)
        p.add_argument("--config", type=Path, help=f"default {DEFAULT_CONFIG}")
        if name == "once":
            p.add_argument(
                "--no-follow",
                action="store_true",
                help="one pass only: start the jobs, push the statuses, wait for those jobs, plan nothing more",
            )
    p = command("jobs", cmd_jobs, "list jobs, or show one job with its log")
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--config", type=Path, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--request", help="only this request's jobs")
    p.add_argument("--limit", type=int, default=50)
    p = command("schema", cmd_schema, "print the JSON Schema of request files")
    p.add_argument("--profiles", type=Path, help="a profiles folder (default: the shipped profiles)")
    p = command("demo", cmd_demo, "run one cycle against a throw-away Git repo and a fake Proxmox VE")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--verbose", action="store_true", help="show the reconciler's log as well")
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    top = parser()
    args, extra = top.parse_known_args(argv)
    if extra:
        top.usage_error = EXIT_PLAN_ERROR if args.command == "plan" else top.usage_error
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    out = out or sys.stdout
    json_lines = None if args.log_format is None else args.log_format == "json"
    # The daemon logs to stdout (journald keeps it); other commands print results there, so they log to stderr.
    quiet = args.command == "demo" and not args.verbose  # the demo's story is its output
    logs.setup(
        json_lines=json_lines,
        stream=sys.stdout if args.command == "run" else sys.stderr,
        level="warning" if quiet else "info",
    )
    error = EXIT_PLAN_ERROR if args.command == "plan" else EXIT_ERROR
    # Whatever the commands create (the job database, the checkout, the lock) is the owner's alone.
    umask = os.umask(0o077)
    try:
        code: int = args.fn(args, out)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"reconciler: {exc.source}: {problem}\n")
        return error
    except (GitError, ProxmoxError, StateError, AlreadyRunning) as exc:
        sys.stderr.write(f"reconciler: {exc}\n")
        return error
    finally:
        os.umask(umask)
    return code
