"""Source: the checkout at one revision, read without following a link (the first step of a pass).

The requests folder is listed before a byte of it is read; desired.files sorts the listing into request files
and entries refused unread. The reconciler's own status, Caddy and scrape target files are read back the same way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from reconciler.config import Config
from reconciler.desired.files import Entry, Kind, sort_out, unopened
from reconciler.desired.request import Request
from reconciler.desired.validate import parse_request
from reconciler.gateways.git import Checkout
from reconciler.model.desired import Invalid, RequestFile
from reconciler.model.standing import Standing
from reconciler.parse import MAX_FILE_BYTES, load_yaml
from reconciler.report import status
from reconciler.report.files import GeneratedPaths


@dataclass(frozen=True)
class Source:
    """The checkout at one revision: request files and the generated files already there."""

    revision: str | None
    requests: list[RequestFile]
    caddy: dict[str, bytes]
    status: dict[str, bytes]
    requests_revision: str | None = None  # the last commit that changed requests/
    confirmed: str | None = None  # the revision the confirm file names
    refused: tuple[Invalid, ...] = ()  # entries of requests/ refused unread: links, folders, names, duplicates
    not_plain: frozenset[str] = frozenset()  # generated paths holding a link or other non-file: never written
    targets: dict[str, bytes] = field(default_factory=dict)  # the scrape target files (prometheus.targets)

    @property
    def previous(self) -> dict[str, Standing]:
        """The statuses the last pass wrote, by request."""
        out = {}
        for text in self.status.values():
            parsed = status.parse(text)
            if parsed is not None:
                out[parsed.name] = parsed
        return out


def read_source(checkout: Checkout, config: Config) -> Source:
    """Fetch, fast-forward and read the checkout: the request files with the commit that last changed each, the
    entries refused unread, and the generated files.

    Raises GitError (permanent) when the requests, status or Caddy folder is, or lies under, a symbolic
    link: all three are listed before a byte is read, and nothing is read or written through a link.
    """
    revision = checkout.sync()
    paths = config.paths
    targets = config.prometheus.targets
    folders = (paths.requests, paths.status, paths.caddy, *([targets] if targets else []))
    listed = {folder: checkout.list_dir(folder) for folder in folders}
    requests = read_request_folder(checkout, paths.requests, listed[paths.requests])
    caddy_files, caddy_odd = read_generated(checkout, paths.caddy, listed[paths.caddy])
    status_files, status_odd = read_generated(checkout, paths.status, listed[paths.status])
    target_files, targets_odd = (
        read_generated(checkout, targets, listed[targets], (".json",)) if targets else ({}, frozenset())
    )
    return Source(
        revision,
        requests.files,
        caddy_files,
        status_files,
        requests.revision,
        confirmed_revision(checkout.read_file(config.guard.confirm_file)),
        requests.refused,
        caddy_odd | status_odd | targets_odd,
        target_files,
    )


def confirmed_revision(text: bytes | None) -> str | None:
    """The revision the confirm file names (`confirm: <revision>`), or None."""
    if text is None:
        return None
    try:
        doc = load_yaml(text)
    except ValueError:
        return None
    value = doc.get("confirm") if isinstance(doc, dict) else None
    return str(value).strip() if value else None


@dataclass(frozen=True)
class RequestFolder:
    """The requests folder as read: the files to validate, the entries refused unread, the folder's last commit."""

    files: list[RequestFile]
    refused: tuple[Invalid, ...]
    revision: str | None


def read_request_folder(
    checkout: Checkout, folder: str, listed: Mapping[str, os.stat_result] | None = None
) -> RequestFolder:
    """The request files of a checkout, each with the commit that last changed it; the entries refused before
    a byte of them is read (see desired.files); and the last commit that changed the folder (what a
    mass-change confirmation names). listed: the folder's listing, when the caller has it already."""
    entries = checkout.list_dir(folder) if listed is None else listed
    listing = sort_out(folder, {name: Entry.of(st.st_mode, st.st_size) for name, st in entries.items()})
    texts = checkout.read_entries(folder, [c.entry for c in listing.candidates], MAX_FILE_BYTES + 1)
    refused = list(listing.refused)
    read = []
    for candidate in listing.candidates:
        text = texts.get(candidate.entry)
        if text is None:
            refused.append(unopened(folder, candidate))
        else:
            read.append((f"{folder}/{candidate.entry}", candidate.name, text))
    paths = {path for path, _, _ in read} | {f"{folder}/{e}" for r in refused for e in r.entries}
    revisions = checkout.last_changes(folder, paths)
    return RequestFolder(
        [RequestFile(path, name, text, revisions.get(path)) for path, name, text in sorted(read)],
        tuple(sorted((r.invalid(folder, revisions) for r in refused), key=lambda i: i.name)),
        checkout.last_change(folder),
    )


def read_generated(
    checkout: Checkout, folder: str, listed: Mapping[str, os.stat_result], suffixes: tuple[str, ...] = (".yaml", ".yml")
) -> tuple[dict[str, bytes], frozenset[str]]:
    """The plain files of a generated folder (at most MAX_FILE_BYTES + 1 bytes each: load_yaml refuses more),
    and the paths there that are not plain files (never followed, never written)."""
    names = [n for n in listed if n.endswith(suffixes)]
    plain = [n for n in names if Entry.of(listed[n].st_mode, 0).kind == Kind.FILE]
    texts = checkout.read_entries(folder, plain, MAX_FILE_BYTES + 1)
    files = {f"{folder}/{n}": t for n, t in texts.items() if t is not None}
    return files, frozenset(f"{folder}/{n}" for n in names) - set(files)


def routed_paths(requests: Iterable[RequestFile], paths: GeneratedPaths) -> set[str]:
    """The Caddy files of every request that asks to be exposed at a domain (valid or not otherwise)."""
    out = set()
    for file in requests:
        parsed = parse_request(file)  # cached: validate parsed the same file this pass
        service = parsed.service if isinstance(parsed, Request) else None
        if service is not None and service.expose and service.domain:
            with contextlib.suppress(ValueError):
                out.add(paths.caddy(service.domain))
    return out
