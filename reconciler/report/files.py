"""Where generated files may go: only into the configured status, Caddy and scrape target directories, and the
single files (site, hosts), by construction."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath

from reconciler.config import PathsConfig
from reconciler.desired.request import DOMAIN

_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]")


class GeneratedPaths:
    """Builds every path the reconciler writes; none can leave its directory."""

    def __init__(self, paths: PathsConfig, targets: str | None = None) -> None:
        self.status_dir = PurePosixPath(paths.status)
        self.caddy_dir = PurePosixPath(paths.caddy)
        self.site = str(PurePosixPath(paths.site))  # the config's value: relative, inside the repository
        self.targets_dir = PurePosixPath(targets) if targets else None

    def status(self, stem: str) -> str:
        """status/<stem>.yaml for the request file requests/<stem>.yaml (any stem, made safe)."""
        safe = _SAFE_STEM.sub("_", stem).lstrip(".") or "_"
        return self._inside(self.status_dir, f"{safe}.yaml")

    def caddy(self, domain: str) -> str:
        """caddy/services/<domain>.yaml; the domain must be a valid DNS name."""
        if not re.fullmatch(DOMAIN, domain):
            raise ValueError(f"not a domain name: {domain!r}")
        return self._inside(self.caddy_dir, f"{domain}.yaml")

    def target(self, request: str) -> str:
        """prometheus/targets/<request>.json (prometheus.targets must be set)."""
        if self.targets_dir is None:
            raise ValueError("prometheus.targets is not set")
        safe = _SAFE_STEM.sub("_", request).lstrip(".") or "_"
        return self._inside(self.targets_dir, f"{safe}.json")

    @staticmethod
    def _inside(directory: PurePosixPath, filename: str) -> str:
        path = directory / filename
        if path.parent != directory or "/" in filename or filename.startswith("."):
            raise ValueError(f"refusing to write {path}: outside {directory}")
        return str(path)


def changes(
    existing: Mapping[str, bytes],
    wanted: Mapping[str, str],
    owned: Callable[[bytes], bool],
    keep: Callable[[str, bytes], bool] = lambda path, text: False,
) -> dict[str, str | None]:
    """The writes (text) and deletions (None) that turn existing generated files into wanted ones.

    Only files whose content the reconciler wrote (owned) are ever changed or deleted; keep spares some.
    """
    out: dict[str, str | None] = {}
    for path, text in wanted.items():
        current = existing.get(path)
        if current is not None and not owned(current):
            continue  # a hand-written file: never overwritten (validation reports the clash)
        if current is None or current.decode("utf-8", "replace") != text:
            out[path] = text
    for path, current in existing.items():
        if path not in wanted and owned(current) and not keep(path, current):
            out[path] = None
    return out


def hand_edited(
    existing: Mapping[str, bytes], paths: Iterable[str], owned: Callable[[bytes], bool]
) -> dict[str, bytes]:
    """Of the files the reconciler would write at paths, those already there without its header (path ->
    content): edited by hand, so changes() leaves them as they are, stale, and they must be reported."""
    return {p: existing[p] for p in sorted(set(paths)) if p in existing and not owned(existing[p])}


class HandEdits:
    """Generated files found edited by hand, remembered from pass to pass so that each change is said once."""

    def __init__(self) -> None:
        self.current: dict[str, str] = {}  # path -> digest of what was found there

    def update(self, found: Mapping[str, bytes]) -> list[str]:
        """Remember what this pass found; the paths that are new, or changed, since the last pass."""
        digests = {path: hashlib.sha256(text).hexdigest() for path, text in found.items()}
        fresh = sorted(p for p, d in digests.items() if self.current.get(p) != d)
        self.current = digests
        return fresh
