"""Reading a folder's files without following a link and without reading more than a cap (no git needed).

The checkout is written by anyone who can push: a file there may be a link to anywhere on this machine, a pipe,
or gigabytes long. Files are opened relative to their folder's descriptor with O_NOFOLLOW, so a link put there
after the listing is refused by the kernel itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def read_plain(name: str, folder_fd: int, limit: int) -> bytes | None:
    """At most limit bytes of the plain file name in an open folder; None when it is not one (O_NONBLOCK: a pipe
    never blocks the open)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        while limit > 0 and (chunk := os.read(fd, min(limit, 1 << 16))):
            chunks.append(chunk)
            limit -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def list_entries(folder_fd: int) -> dict[str, os.stat_result]:
    """Every entry directly in an open folder, by name, with its lstat (links are not followed)."""
    out: dict[str, os.stat_result] = {}
    with os.scandir(folder_fd) as entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):  # gone since the listing
                out[entry.name] = entry.stat(follow_symlinks=False)
    return out


def read_yaml_files(directory: Path, limit: int) -> dict[str, bytes]:
    """The plain `*.yaml` files directly in directory (path -> at most limit bytes); {} when directory is not a
    real folder (a link to one is not followed)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        names = sorted(n for n, st in list_entries(fd).items() if stat.S_ISREG(st.st_mode) and n.endswith(".yaml"))
        read = {name: read_plain(name, fd, limit) for name in names}
    finally:
        os.close(fd)
    return {str(directory / name): data for name, data in read.items() if data is not None}
