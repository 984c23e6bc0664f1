"""`reconciler jobs`: the job log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from reconciler.cli.common import EXIT_FAILED, config_of
from reconciler.config import DEFAULT_CONFIG


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jobs`."""
    p.add_argument("id", nargs="?", type=int, help="show this job with its log (default: list jobs)")
    p.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help=f"the config file (default: {DEFAULT_CONFIG})"
    )
    p.add_argument("--request", help="only this request's jobs")
    p.add_argument("--limit", type=int, default=50, help="how many jobs to list, newest first")


def cmd_jobs(args: argparse.Namespace, out: TextIO) -> int:
    """List recent jobs, or show one job with its log."""
    from reconciler.gateways.sqlite import JobStore

    store = JobStore(config_of(args).state.database)
    try:
        if args.id is None:
            for job in store.jobs(limit=args.limit, request=args.request):
                out.write(
                    f"{job.id:>6}  {job.created_at}  {job.status:<9}  {job.type:<12}  {job.request:<24}"
                    f"  {job.error_message or job.summary}\n"
                )
            return 0
        one = store.job(args.id)
        if one is None:
            out.write(f"no job {args.id}\n")
            return EXIT_FAILED
        out.write(
            f"job {one.id}: {one.type} {one.request} ({one.profile or '-'}): {one.status}\n"
            f"created {one.created_at}, started {one.started_at}, finished {one.finished_at}\n"
        )
        if one.error_message:
            out.write(f"error: {one.error_message}\n")
        for line in store.logs(one.id):
            out.write(f"{line.timestamp} {line.level:<5} {line.message}\n")
        return 0
    finally:
        store.close()
