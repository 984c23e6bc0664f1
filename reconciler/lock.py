"""One reconciler per checkout: an exclusive lock the kernel releases when the process dies, crash or not."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from reconciler.model.errors import ReconcilerError


class AlreadyRunning(ReconcilerError):
    """Another reconciler process holds the checkout."""


class CheckoutLock:
    """Holds `<checkout>.lock` for the life of the process."""

    def __init__(self, checkout: Path) -> None:
        self.path = checkout.with_name(checkout.name + ".lock")
        self._handle: IO[str] | None = None

    def acquire(self) -> CheckoutLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only whatever the umask: it names the holder's pid, and nobody else has a reason to open it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise AlreadyRunning(
                f"another reconciler (pid {holder}) is running on this checkout; lock {self.path}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
