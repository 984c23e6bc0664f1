"""What `reconciler once` shows a person while it follows its jobs: a transient line on stderr.

Only on an interactive terminal: a pipe, a log file, journald or CI get nothing from here (their log lines
say what happens). The counts come from the job database, read a few times a second: every job created since
the run began (validate jobs included) and how many of them have ended.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from reconciler import logs
from reconciler.cli.output import console_for

if TYPE_CHECKING:
    from reconciler.gateways.sqlite import JobStore

POLL = 0.25  # seconds between two readings of the job database
MOST = 10_000  # the jobs one run could start, at most, read at each poll


def wanted() -> bool:
    """Whether stderr is a terminal that can redraw a line (not TERM=dumb)."""
    return console_for(sys.stderr).is_interactive


@contextmanager
def following(store: JobStore, json_lines: bool | None) -> Iterator[None]:
    """While the block runs, a line on stderr counting the jobs started since it began and those done.

    Log lines go above it meanwhile (logging is pointed at rich's stand-in for stderr, then back); json_lines
    is the log format the command was started with. Nothing is shown when stderr is not an interactive terminal.
    """
    if not wanted():
        yield
        return
    first = max((job.id for job in store.jobs(limit=1)), default=0)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("jobs: {task.completed:.0f}/{task.total:.0f} done{task.fields[failed]}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console_for(sys.stderr),
        transient=True,
        redirect_stdout=False,  # stdout may be elsewhere (a pipe): only stderr's writes go above the line
        redirect_stderr=True,
    )
    task = progress.add_task("jobs", total=0, failed="")
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(POLL):
            try:
                jobs = [job for job in store.jobs(limit=MOST) if job.id > first]
            except Exception:
                continue
            done = [job for job in jobs if job.status in ("succeeded", "failed")]
            failed = sum(job.status == "failed" for job in done)
            progress.update(task, total=len(jobs), completed=len(done), failed=f", {failed} failed" if failed else "")

    stderr = sys.stderr
    with progress:
        # sys.stderr is rich's stand-in while it shows, and says it is no terminal: the format is decided here.
        logs.setup(json_lines=bool(json_lines), stream=sys.stderr)
        watcher = threading.Thread(target=poll, name="progress", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()
            logs.setup(json_lines=json_lines, stream=stderr)
