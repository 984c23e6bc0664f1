"""`reconciler validate`: request files checked offline, for CI and pre-commit hooks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from reconciler.cli.common import EXIT_FAILED
from reconciler.cli.requests import request_files
from reconciler.config import PathsConfig, SiteConfig, load_config
from reconciler.desired.claims import invalid_claims
from reconciler.desired.profile import Profile, builtin_profiles_dir, load_profiles
from reconciler.desired.validate import validate
from reconciler.gateways.folder import read_plain, read_yaml_files
from reconciler.model.desired import Invalid, RequestFile
from reconciler.model.errors import ConfigError
from reconciler.model.vocab import Phase
from reconciler.parse import MAX_FILE_BYTES, counted, dump_yaml
from reconciler.plan.conflicts import Claims, resolve_clashes
from reconciler.report import caddy, site, status

# The checks that need the site's approved values, in the words the skipped-checks note uses.
SITE_CHECKS = (
    "nodes",
    "storages",
    "bridges and addresses",
    "VLANs",
    "limits",
    "the VMID range",
    "reserved addresses",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `validate`."""
    p.add_argument("paths", nargs="*", help="files or directories (default: requests)")
    p.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="check the site's approved values and profiles from this config (wins over the site file)",
    )
    p.add_argument(
        "--site",
        type=Path,
        metavar="FILE",
        help="the site file the daemon writes (default: site.yaml at the root of the repository of the requests)",
    )
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json", "yaml"),
        default="text",
        help="text: one `file:field: reason` line per problem; json or yaml: one document",
    )
    p.epilog = "exit status: 0 every file valid, 1 a problem found, 2 the command could not run"


@dataclass(frozen=True)
class SiteSource:
    """The site's values a run checks against, where they came from, and why there are none when there are none."""

    site: SiteConfig | None = None
    profiles: Mapping[str, Profile] | None = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    where: str | None = None
    missing: str | None = None  # the reason no site values were found


def repository_roots(files: Sequence[RequestFile], paths: PathsConfig) -> list[Path]:
    """The repository roots of the request files: the folders above each requests folder, as the config lays it
    out (a file outside any requests folder has none)."""
    depth = len(Path(paths.requests).parts)
    roots = set()
    for file in files:
        folder = Path(file.path).parent
        if folder.parts[-depth:] == Path(paths.requests).parts:
            roots.add(Path(*folder.parts[:-depth]) if len(folder.parts) > depth else Path("."))
    return sorted(roots)


def offline_claims(files: Sequence[RequestFile], paths: PathsConfig, site: SiteConfig | None = None) -> Claims:
    """What the repository's own generated files say exists: who is provisioned (status files with a VMID)
    and which domains the Caddy files hold. Found beside the requests folder, as the config lays them out."""
    provisioned: set[str] = set()
    domains: dict[str, str | None] = {}
    for root in repository_roots(files, paths):
        for text in read_yaml_files(root / paths.status, MAX_FILE_BYTES + 1).values():
            parsed = status.parse(text)
            if parsed is not None and parsed.vmid is not None and parsed.phase != Phase.ORPHANED:
                provisioned.add(parsed.name)
        domains.update(caddy.domains(read_yaml_files(root / paths.caddy, MAX_FILE_BYTES + 1)))
    vmids = range(site.vmid_range.low, site.vmid_range.high + 1) if site is not None else None
    return Claims(domains, frozenset(provisioned), vmid_range=vmids)


def site_source(args: argparse.Namespace, files: Sequence[RequestFile]) -> SiteSource:
    """The site's values: from --config, else --site, else the site file at the repository root."""
    if args.config:
        config = load_config(args.config)
        profiles = load_profiles(config.profiles or builtin_profiles_dir(), set(config.site.templates))
        return SiteSource(config.site, profiles, config.paths, str(args.config))
    if args.site is not None:
        return _read_site(args.site, str(args.site), strict=True)
    paths = PathsConfig()
    roots = repository_roots(files, paths)
    if not roots:
        return SiteSource(missing=f"no {paths.site}: the files are in no {paths.requests} folder")
    for root in roots:
        found = _read_site(root / paths.site, str(root / paths.site), strict=False)
        if found.site is not None or found.missing is not None:
            return found
    return SiteSource(missing=f"{roots[0] / paths.site if len(roots) == 1 else paths.site} not found")


def _read_site(path: Path, shown: str, strict: bool) -> SiteSource:
    """A site file: the one named on the command line (strict: any problem stops the command), or the one at a
    repository root (never read through a link, used only when the reconciler wrote it; missing: not found)."""
    if strict:
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ConfigError(shown, [f"cannot read: {exc.strerror}"]) from None
    else:
        found = _read_plain(path)
        if found is None:
            return SiteSource()
        text = found
        if not site.is_generated(text):
            return SiteSource(missing=f"{shown} has lost the reconciler's header, so it is not trusted")
    try:
        values = site.parse(text)
    except ValueError as exc:
        if strict:
            raise ConfigError(shown, [str(exc)]) from None
        return SiteSource(missing=f"{shown}: {exc}")
    return SiteSource(values.site, values.profiles or None, where=shown)


def _read_plain(path: Path) -> bytes | None:
    """A file in the repository being checked (a pull request's): never through a link, at most the YAML cap."""
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return read_plain(path.name, fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)


def skipped_note(source: SiteSource) -> str:
    """The plain-words note of what a run without site values did not check."""
    checks = ", ".join(SITE_CHECKS[:-1]) + f" and {SITE_CHECKS[-1]}"
    return f"no site values ({source.missing}): skipped the checks of {checks}; profiles are the shipped ones"


def cmd_validate(args: argparse.Namespace, out: TextIO) -> int:
    """Check request files offline; one `file:field: reason` line per problem, or one document (-o)."""
    files, unread = request_files(args.paths)
    source = site_source(args, files)
    profiles = source.profiles or load_profiles(builtin_profiles_dir())
    valid, checked = validate(files, profiles, source.site)
    # The same clash rule as every pass, with what the repository's status and Caddy files say exists; a file
    # with errors takes part with what its fields still say, so its clash is said beside them.
    _, clashed = resolve_clashes(
        valid, offline_claims(files, source.paths, source.site), invalid_claims(files, checked)
    )
    by_name = {i.name: i for i in clashed}
    refused = [i for i in clashed if i.name not in {c.name for c in checked}]
    invalid = sorted([*(by_name.get(i.name, i) for i in checked), *refused, *unread], key=lambda i: i.path)
    skipped = list(SITE_CHECKS) if source.site is None else []
    if args.output != "text":
        doc = document(files, invalid, unread, source, skipped)
        out.write(json.dumps(doc, indent=2) + "\n" if args.output == "json" else dump_yaml(doc))
        return EXIT_FAILED if invalid else 0
    if skipped:
        sys.stderr.write(f"reconciler: {skipped_note(source)}\n")
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


def document(
    files: Sequence[RequestFile],
    invalid: Sequence[Invalid],
    unread: Sequence[Invalid],
    source: SiteSource,
    skipped: list[str],
) -> dict[str, object]:
    """The -o json/yaml document; every key always there (see the README)."""
    screened = {id(i) for i in unread}
    return {
        "valid": not invalid,
        "files": len(files),
        "site": source.where,
        "skipped": skipped,
        "note": skipped_note(source) if skipped else None,
        "problems": [
            {"path": item.path, "field": None if id(item) in screened else p.field or None, "reason": p.reason}
            for item in invalid
            for p in item.problems
        ],
    }
