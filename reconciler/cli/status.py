"""`reconciler status` (alias `get`): where every request stands, read from the status files (no daemon needed).

With a config the files come from the remote's head, fetched into a throw-away clone (the daemon's own checkout
is never touched); with --repo from a working tree's status folder as it is. Only files the reconciler wrote
count (report.status.parse); a link is never followed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich.table import Table
from rich.text import Text

from reconciler.cli.common import EXIT_ERROR, EXIT_FAILED, config_of, take_secrets
from reconciler.cli.output import PHASE_STYLES, console_for, print_line, print_table, styled, table
from reconciler.config import DEFAULT_CONFIG, Config
from reconciler.model.errors import ConfigError, GitError
from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase
from reconciler.parse import MAX_FILE_BYTES, dump_yaml
from reconciler.report.status import document, domain

if TYPE_CHECKING:
    from reconciler.gateways.git import Checkout

COLUMNS = ("NAME", "PHASE", "HEALTH", "VMID", "NODE", "ADDRESS", "DOMAIN", "AGE", "DRIFT", "JOB", "MESSAGE")


@dataclass(frozen=True)
class Found:
    """The status files read: repository path -> text, the revision they were read at, and when each last
    changed (seconds since the epoch; only known when read from Git)."""

    files: Mapping[str, bytes]
    revision: str | None
    changed: Mapping[str, int]
    where: str


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `status` and of its alias `get`."""
    p.add_argument("names", nargs="*", metavar="NAME", help="only these requests (default: every request)")
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help=f"read the status files at the head of this config's git.remote and branch (default: {DEFAULT_CONFIG})",
    )
    p.add_argument(
        "--repo",
        type=Path,
        metavar="PATH",
        help="read the status folder of this working tree as it is, instead of the remote (default: the remote)",
    )
    p.add_argument(
        "--phase",
        type=phase_arg,
        action="append",
        default=[],
        help=f"only requests in this phase; repeatable ({', '.join(p.value for p in Phase)}; default: every phase)",
    )
    p.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default="table", help="table for people, or a document"
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="keep following: print the table again whenever the remote branch moves (Ctrl-C ends it)",
    )
    p.add_argument(
        "--interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="with --watch, how often to ask the remote whether its branch moved",
    )
    p.epilog = "exit status: 0, 1 when a listed request is Failed or Invalid, 2 an error; --watch: 0 when stopped"


def _seconds(text: str) -> float:
    """An --interval value: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def phase_arg(text: str) -> Phase:
    """A --phase value, in any case ("ready", "Ready")."""
    for phase in Phase:
        if phase.value.lower() == text.lower():
            return phase
    raise argparse.ArgumentTypeError(f"{text!r} is not a phase ({', '.join(p.value for p in Phase)})")


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """Print one line (or one JSON/YAML entry) per request; 1 when any listed request is Failed or Invalid."""
    if args.watch:
        if args.repo is not None:
            raise ConfigError("--watch", ["--watch follows the remote's head; it cannot follow --repo"])
        if args.output != "table":
            raise ConfigError("--watch", ["--watch prints tables; it cannot be used with -o json or -o yaml"])
        from reconciler.cli.status_watch import watch

        return watch(args, out)
    found = _read_tree(args.repo, args) if args.repo is not None else _read_remote(config_of(args))
    listed, missing = select(found, args)
    if args.output == "table":
        console = console_for(out)
        if listed:
            print_table(console, table_of(listed, time.time()))
        print_line(console, summary_of(listed, found))
    else:
        doc = {"revision": found.revision, "requests": [_entry(s, c) for s, c in listed]}
        out.write(json.dumps(doc, indent=2) + "\n" if args.output == "json" else dump_yaml(doc))
    if missing:
        sys.stderr.write(f"reconciler: no status for {', '.join(missing)} in {found.where}\n")
        return EXIT_ERROR
    return EXIT_FAILED if any(s.phase.failing for s, _ in listed) else 0


Listed = list[tuple[Standing, int | None]]


def select(found: Found, args: argparse.Namespace) -> tuple[Listed, list[str]]:
    """The requests to list (by name, with when each file last changed), and the names asked for but not found.

    Files the reconciler did not write are said on stderr and left out.
    """
    from reconciler.report.status import parse

    standings: dict[str, tuple[Standing, int | None]] = {}
    ignored = []
    for path, text in sorted(found.files.items()):
        standing = parse(text)
        if standing is None:
            ignored.append(path)
        else:
            standings[standing.name] = (standing, found.changed.get(path))
    if ignored:
        sys.stderr.write(f"reconciler: ignored {_count(len(ignored), 'file')} not written by the reconciler: ")
        sys.stderr.write(", ".join(ignored) + "\n")
    missing = [name for name in args.names if name not in standings]
    listed = [
        (standing, changed)
        for name, (standing, changed) in sorted(standings.items())
        if (not args.names or name in args.names) and (not args.phase or standing.phase in args.phase)
    ]
    return listed, missing


def _read_remote(config: Config) -> Found:
    """The status files at the head of the configured remote branch, from a clone in a temporary folder."""
    with remote_clone(config) as checkout:
        return read_head(checkout, config)


@contextlib.contextmanager
def remote_clone(config: Config) -> Iterator[Checkout]:
    """A Checkout of the remote in a temporary folder (cloned when first used), removed at the end."""
    # GitPython starts git with the whole environment (`git version` as it is imported, `git cat-file` to read
    # a commit's date), not git.py's: no secret may be there. The Git token is handed to the clone alone.
    environ = take_secrets(config)
    from reconciler.gateways.git import Checkout

    with tempfile.TemporaryDirectory(prefix="reconciler-status-") as scratch:
        checkout = Checkout(config.git.model_copy(update={"checkout": Path(scratch) / "clone"}), environ)
        try:
            yield checkout
        finally:
            with contextlib.suppress(GitError):
                checkout.repo.close()


def read_head(checkout: Checkout, config: Config) -> Found:
    """The status files at the remote branch's head, fetched into checkout."""
    folder = config.paths.status
    revision = checkout.sync() if checkout.remote_tip() is not None else None
    if revision is None:
        raise GitError("ls-remote", f"the remote has no branch {config.git.branch}")
    files = checkout.read_dir(folder, suffixes=(".yaml",))
    commits = checkout.last_changes(folder, set(files))
    dates = {sha: int(checkout.repo.commit(sha).committed_date) for sha in set(commits.values())}
    changed = {path: dates[sha] for path, sha in commits.items()}
    return Found(files, revision, changed, f"{folder}/ at {config.git.branch} {revision[:12]}")


def _read_tree(repo: Path, args: argparse.Namespace) -> Found:
    """The status files in a working tree as they are (no history: when each changed is not known)."""
    from reconciler.gateways.folder import read_yaml_files

    folder = config_of(args).paths.status if args.config is not None else "status"
    if not repo.is_dir():
        raise ConfigError("--repo", [f"{repo} is not a folder"])
    directory = repo / folder
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(directory).st_mode):
            raise ConfigError("--repo", [f"{directory} is a symbolic link; status files are read from real folders"])
    files = read_yaml_files(directory, MAX_FILE_BYTES + 1)
    return Found({f"{folder}/{Path(path).name}": text for path, text in files.items()}, None, {}, f"{directory}")


def _timestamp(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _entry(standing: Standing, changed: int | None) -> dict[str, object]:
    """A request's entry of the JSON/YAML document: reconcile's entry with when its status last changed after
    `domain` (the shape is documented in the README: keep it stable)."""
    entry = document(standing)
    keys = list(entry)
    at = keys.index("domain") + 1
    return {**{k: entry[k] for k in keys[:at]}, "changed": _timestamp(changed), **{k: entry[k] for k in keys[at:]}}


def age(seconds: float) -> str:
    """A duration as people read it: 45s, 12m, 3h, 5d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _health(healthy: bool | None) -> str:
    return "-" if healthy is None else "healthy" if healthy else "unhealthy"


def _drift(standing: Standing) -> str:
    if not standing.drift:
        return "-"
    text = f"{len(standing.drift)}: " + ",".join(d.field for d in standing.drift)
    return text + " (flapping)" if standing.flapping else text


def _row(standing: Standing, changed: int | None, now: float) -> tuple[str, ...]:
    def dash(value: object) -> str:
        return "-" if value is None else str(value)

    return (
        standing.name,
        str(standing.phase),
        _health(standing.healthy),
        dash(standing.vmid),
        dash(standing.node),
        dash(standing.address),
        dash(domain(standing)),
        "-" if changed is None else age(now - changed),
        _drift(standing),
        dash(standing.job),
        standing.message,
    )


def table_of(listed: Listed, now: float) -> Table:
    """A header row and one aligned row per request, its phase in the phase's colour."""
    rows = []
    for standing, changed in listed:
        phase = str(standing.phase)
        row: list[str | Text] = list(_row(standing, changed, now))
        row[1] = styled(phase, PHASE_STYLES.get(phase))
        rows.append(row)
    return table(COLUMNS, rows)


def summary_of(listed: Listed, found: Found) -> str:
    """The line under the table: how many requests in each phase, and where they were read."""
    if not listed:
        return f"no requests found in {found.where}"
    phases: dict[str, int] = {}
    for standing, _ in listed:
        phases[str(standing.phase)] = phases.get(str(standing.phase), 0) + 1
    counts = ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items()))
    return f"{_count(len(listed), 'request')} in {found.where}: {counts}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
