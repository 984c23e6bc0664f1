"""Request files as the command line reads them: by the daemon's rules (desired.files), never following a link."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from reconciler.desired.files import Entry, Refused, display, sort_out, unopened, unsafe_name
from reconciler.gateways.folder import list_entries, read_plain
from reconciler.model.desired import Invalid, RequestFile
from reconciler.model.errors import ConfigError
from reconciler.model.problem import Problem
from reconciler.parse import MAX_FILE_BYTES


def request_files(targets: Sequence[str]) -> tuple[list[RequestFile], list[Invalid]]:
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
        read, odd = screen(folder, str(folder), only)
        files += read
        refused += odd
    return files, refused


def screen(directory: Path, shown: str, only: set[str] | None = None) -> tuple[list[RequestFile], list[Invalid]]:
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


def plan_requests(directory: Path, folder: str) -> tuple[list[RequestFile], list[Invalid]]:
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
    return screen(directory, folder)
