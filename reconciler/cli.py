"""The `reconciler` command line: validate, plan, once, jobs, schema, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from reconciler import __version__, logs
from reconciler.config import DEFAULT_CONFIG, Config, PathsConfig, load_config
from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.desired.request import json_schema
from reconciler.desired.validate import validate
from reconciler.lock import AlreadyRunning
from reconciler.model.desired import RequestFile
from reconciler.model.errors import ConfigError, GitError, ProxmoxError, StateError
from reconciler.model.vocab import Phase
from reconciler.plan.conflicts import Claims, resolve_clashes
from reconciler.report import caddy, status
from reconciler.report.steps import setup_lines

# Commands import what they need when they run: `validate` (a pre-commit hook) stays quick and needs no
# proxmoxer, git or the demo extra.
EXIT_FAILED = 1  # some request is Failed or Invalid
EXIT_ERROR = 2  # the command could not run: config, Git or Proxmox trouble


def _request_files(targets: Sequence[str]) -> list[RequestFile]:
    files = []
    for target in targets or ["requests"]:
        path = Path(target)
        found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for item in found:
            try:
                text = item.read_bytes()
            except OSError as exc:
                raise ConfigError(str(item), [f"cannot read: {exc.strerror}"]) from None
            files.append(RequestFile(str(item), item.stem, text))
    return files


def _read_dir(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        return {}
    return {str(p): p.read_bytes() for p in sorted(directory.glob("*.yaml")) if p.is_file() and not p.is_symlink()}


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
        for text in _read_dir(root / paths.status).values():
            parsed = status.parse(text)
            if parsed is not None and parsed.vmid is not None and parsed.phase != Phase.ORPHANED:
                provisioned.add(parsed.name)
        domains.update(caddy.domains(_read_dir(root / paths.caddy)))
    return Claims(domains, frozenset(provisioned))


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    """Check request files offline; one `file:field: reason` line per problem."""
    config = load_config(args.config) if args.config else None
    if config is not None:
        profiles = load_profiles(config.profiles or builtin_profiles_dir(), set(config.site.templates))
    else:
        profiles = load_profiles(builtin_profiles_dir())
    files = _request_files(args.paths)
    valid, invalid = validate(files, profiles, config.site if config else None)
    # The same clash rule as every pass, with what the repository's status and Caddy files say exists.
    _, refused = resolve_clashes(valid, offline_claims(files, config.paths if config else PathsConfig()))
    invalid = sorted([*invalid, *refused], key=lambda i: i.path)
    for item in invalid:
        for problem in item.problems:
            where = f"{item.path}:{problem.field}" if problem.field else item.path
            out.write(f"{where}: {problem.reason}\n")
    if not files:
        out.write("no request files found\n")
    elif not invalid:
        out.write(f"{len(files)} request file(s) valid\n")
    return EXIT_FAILED if invalid else 0


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config or DEFAULT_CONFIG)


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    """Print what a cycle would do; changes nothing on Proxmox or in Git."""
    from reconciler.runtime import open_runtime

    runtime = open_runtime(_config(args))
    try:
        reconciler = runtime.reconciler
        source = reconciler.read_source()
        decision = reconciler.decide(source)
    finally:
        runtime.close()
    out.write(f"revision {source.revision or '(empty remote)'}: {len(source.requests)} request file(s)\n")
    acting = {a.name for a in decision.plan.actions}
    transport = reconciler.config.provision.transport
    for action in decision.plan.actions:
        out.write(f"  {action.describe()}\n")
        for line in setup_lines(action.desired.setup, transport):
            out.write(f"{line}\n")
    for name, standing in sorted(decision.plan.standings.items()):
        if name in acting:
            continue
        if standing.problems:
            for problem in standing.problems:
                out.write(f"  {name}: Invalid: {standing.request}:{problem}\n")
        else:
            out.write(f"  {name}: {standing.phase}: {standing.message}\n")
    if not decision.plan.actions:
        out.write("nothing to do\n")
    return EXIT_FAILED if any(s.phase == Phase.INVALID for s in decision.plan.standings.values()) else 0


def cmd_once(args: argparse.Namespace, out: TextIO) -> int:
    """Run one cycle; non-zero when any request is Failed or Invalid."""
    from reconciler.runtime import open_runtime

    runtime = open_runtime(_config(args))
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
    from reconciler.daemon.loop import Daemon

    return Daemon(args.config or DEFAULT_CONFIG).run()


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from reconciler.demo import run_demo

    return run_demo(out, keep=args.keep)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="reconciler", description="GitOps reconciler for Proxmox VE homelabs")
    top.add_argument("--version", action="version", version=f"reconciler {__version__}")
    top.add_argument("--log-format", choices=("json", "console"), help="default: console on a terminal")
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, fn: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    p = command("validate", cmd_validate, "check request files offline (for CI and pre-commit)")
    p.add_argument("paths", nargs="*", help="files or directories (default: requests)")
    p.add_argument("--config", type=Path, help="check the site's approved values and profiles from this config")
    for name, fn, text in (
        ("plan", cmd_plan, "print what one cycle would do, changing nothing"),
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
    args = parser().parse_args(argv)
    out = out or sys.stdout
    json_lines = None if args.log_format is None else args.log_format == "json"
    # The daemon logs to stdout (journald keeps it); other commands print results there, so they log to stderr.
    quiet = args.command == "demo" and not args.verbose  # the demo's story is its output
    logs.setup(
        json_lines=json_lines,
        stream=sys.stdout if args.command == "run" else sys.stderr,
        level="warning" if quiet else "info",
    )
    try:
        code: int = args.fn(args, out)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"reconciler: {exc.source}: {problem}\n")
        return EXIT_ERROR
    except (GitError, ProxmoxError, StateError, AlreadyRunning) as exc:
        sys.stderr.write(f"reconciler: {exc}\n")
        return EXIT_ERROR
    return code
