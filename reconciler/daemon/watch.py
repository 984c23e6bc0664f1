"""Watch a local remote, the config file and the profiles (watchfiles), and turn changes into triggers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import structlog
import watchfiles

log = structlog.get_logger("reconciler.watch")


def start_watching(
    remote: Path | None,
    config_files: list[Path],
    on_remote: Callable[[], None],
    on_config: Callable[[], None],
    stop: threading.Event,
) -> threading.Thread | None:
    """A thread calling on_remote when the local remote's refs move, on_config when the config or a profile changes."""
    remote = remote.resolve() if remote is not None and remote.exists() else None
    watched = [p.resolve() for p in config_files if p.exists()]
    paths = ([remote] if remote else []) + watched
    if not paths:
        return None

    def classify(changes: set[tuple[watchfiles.Change, str]]) -> None:
        touched = [Path(p) for _, p in changes]
        if any(p == w or w in p.parents for p in touched for w in watched):
            on_config()
        # A push moves refs (loose or packed) and HEAD's target; objects alone are not yet a push.
        if remote and any(remote in p.parents and ("refs" in p.parts or p.name == "packed-refs") for p in touched):
            on_remote()

    def run() -> None:
        try:
            for changes in watchfiles.watch(
                *paths,
                watch_filter=None,
                debounce=200,
                step=50,
                stop_event=stop,
                rust_timeout=1000,
                yield_on_timeout=False,
                raise_interrupt=False,
            ):
                classify(changes)
        except Exception:  # the daemon still polls; say why the watch is gone
            log.exception("file watch stopped")

    thread = threading.Thread(target=run, name="watch", daemon=True)
    thread.start()
    log.info("watching", paths=[str(p) for p in paths])
    return thread
