"""`reconciler validate`: request files checked offline, for CI and pre-commit hooks."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from reconciler.cli.common import EXIT_FAILED
from reconciler.cli.requests import request_files
from reconciler.config import (
    PathsConfig,
    load_config,
)
from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.desired.validate import validate
from reconciler.gateways.folder import read_yaml_files
from reconciler.model.desired import RequestFile
from reconciler.model.vocab import Phase
from reconciler.parse import MAX_FILE_BYTES, counted
from reconciler.plan.conflicts import Claims, resolve_clashes
from reconciler.report import caddy, status


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `validate`."""
    p.add_argument("paths", nargs="*", help="files or directories (default: requests)")
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="check the site's approved values and profiles from this config (default: none, format checks only)",
    )


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
    files, unread = request_files(args.paths)
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
        out.write(f"{counted(len(files), 'request file')} valid\n")
    return EXIT_FAILED if invalid else 0
