"""`reconciler status --watch`: the status table again whenever the remote branch moves.

Each interval one `git ls-remote` asks for the branch's head (cheap: no fetch); only a new head is fetched and
read. On a terminal the table is redrawn in place (rich Live; the AGE column keeps counting); elsewhere (a pipe,
a log) each new reading is printed whole, after a line naming its revision. Ctrl-C or SIGTERM ends it: exit 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from reconciler.cli.common import config_of
from reconciler.cli.output import console_for, print_line, print_table
from reconciler.cli.status import Found, read_head, remote_clone, select, summary_of, table_of
from reconciler.config import Config
from reconciler.model.errors import GitError

_Reread = Callable[[], "Found"]


class _Stopped(Exception):
    """SIGTERM arrived: end the watch as Ctrl-C does."""


def watch(args: argparse.Namespace, out: TextIO) -> int:
    """Follow the remote branch until stopped; 0 when stopped by Ctrl-C or SIGTERM."""
    config = config_of(args)
    console = console_for(out)
    try:
        with _terminated(), remote_clone(config) as checkout:
            found = read_head(checkout, config)  # a first reading that fails is the command's error

            def reread() -> Found:
                nonlocal found
                try:
                    if checkout.remote_tip() != found.revision:
                        found = read_head(checkout, config)
                except GitError as exc:  # a remote away for a while: say so and ask again at the next interval
                    sys.stderr.write(f"reconciler: {exc}; asking again in {args.interval:g} s\n")
                return found

            if console.is_interactive:
                _redraw(console, args, config, found, reread)
            else:
                _print_each(console, out, args, config, found, reread)
    except (KeyboardInterrupt, _Stopped):
        return 0
    return 0  # pragma: no cover - the loops end only by a signal


@contextmanager
def _terminated() -> Iterator[None]:
    """SIGTERM raises _Stopped while the watch runs (a sleep or a git call is cut short), then is put back."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _heading(config: Config, found: Found) -> str:
    read_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{config.git.branch} at {found.revision} (read {read_at})"


def _print_each(
    console: Console,
    out: TextIO,
    args: argparse.Namespace,
    config: Config,
    found: Found,
    reread: _Reread,
) -> None:
    """Off a terminal: each new revision's table, whole, after a line that names the revision."""
    shown = None
    while True:
        if found.revision != shown:
            listed, missing = select(found, args)
            print_line(console, _heading(config, found))
            if listed:
                print_table(console, table_of(listed, time.time()))
            print_line(console, summary_of(listed, found))
            if missing:
                sys.stderr.write(f"reconciler: no status for {', '.join(missing)} in {found.where}\n")
            out.flush()  # the reader of a pipe sees each table as it is read, not when a buffer fills
            shown = found.revision
        time.sleep(args.interval)
        found = reread()


def _redraw(console: Console, args: argparse.Namespace, config: Config, found: Found, reread: _Reread) -> None:
    """On a terminal: one table, redrawn in place at each interval (a new head re-read first)."""

    listed, _ = select(found, args)

    def view() -> RenderableType:
        parts: list[RenderableType] = [Text(_heading(config, found), style="dim")]
        if listed:
            parts.append(table_of(listed, time.time()))
        parts.append(Text(summary_of(listed, found)))
        return Group(*parts)

    with Live(view(), console=console, auto_refresh=False, redirect_stderr=False) as live:
        while True:
            time.sleep(args.interval)
            before, found = found, reread()
            if found is not before:
                listed, _ = select(found, args)
            live.update(view(), refresh=True)
