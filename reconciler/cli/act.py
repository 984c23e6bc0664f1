"""`reconciler once` and `reconciler run`: the commands that act (start-up checks first)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from reconciler.cli.common import EXIT_FAILED, starting
from reconciler.config import (
    DEFAULT_CONFIG,
)


def once_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `once`."""
    run_arguments(p)
    p.add_argument(
        "--no-follow",
        action="store_true",
        help="one pass only: start the jobs, push the statuses, wait for those jobs, plan nothing more",
    )


def run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `run`."""
    p.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help=f"the config file (default: {DEFAULT_CONFIG})"
    )


def cmd_once(args: argparse.Namespace, out: TextIO) -> int:
    """Run one cycle; non-zero when any request is Failed or Invalid."""
    config, environ = starting(args)  # before GitPython is imported: see _starting
    from reconciler.cli.progress import following
    from reconciler.runtime import open_runtime

    runtime = open_runtime(config, environ)
    json_lines = None if args.log_format is None else args.log_format == "json"
    try:
        with following(runtime.store, json_lines):
            report = runtime.reconciler.once(follow=not args.no_follow)
    finally:
        runtime.close()
    for name, st in sorted(report.statuses.items()):
        out.write(f"{name}: {st.phase}: {st.message}" + (f" (job {st.job})" if st.job else "") + "\n")
        for problem in st.problems:
            out.write(f"  {problem}\n")
    out.write(f"commit {report.commit}\n" if report.commit else "no changes to commit\n")
    return EXIT_FAILED if report.failing else 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """The long-running daemon."""
    _, environ = starting(args)  # before GitPython is imported: see _starting
    from reconciler.daemon.loop import Daemon

    return Daemon(args.config or DEFAULT_CONFIG, environ).run()
