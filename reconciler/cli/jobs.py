"""`reconciler jobs`: the job log, as a table for people or as one JSON/YAML document.

The document's shape is documented in the README: keep it stable. Every key is always there (null when not
known); timestamps are ISO-8601 in UTC (`2024-06-01T12:00:00.123Z`), durations in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from reconciler.cli.common import EXIT_FAILED, config_of
from reconciler.cli.output import JOB_STYLES, console_for, print_line, print_table, styled, table
from reconciler.config import DEFAULT_CONFIG
from reconciler.parse import dump_yaml

if TYPE_CHECKING:
    from reconciler.gateways.sqlite import Job, LogLine

COLUMNS = ("ID", "CREATED", "STATUS", "TYPE", "REQUEST", "DURATION", "SUMMARY")
# The order the summary line names the statuses in (those with none are left out).
STATUSES = ("succeeded", "failed", "running", "pending")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jobs`."""
    p.add_argument("id", nargs="?", type=int, help="show this job with its log (default: list jobs)")
    p.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help=f"the config file (default: {DEFAULT_CONFIG})"
    )
    p.add_argument("--request", help="only this request's jobs")
    p.add_argument("--limit", type=int, default=50, help="how many jobs to list, newest first")
    p.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default="table", help="table for people, or a document"
    )
    p.epilog = "exit status: 0, 1 no such job, 2 an error"


def cmd_jobs(args: argparse.Namespace, out: TextIO) -> int:
    """List recent jobs, or show one job with its log."""
    from reconciler.gateways.sqlite import JobStore

    store = JobStore(config_of(args).state.database)
    try:
        if args.id is None:
            jobs = store.jobs(limit=args.limit, request=args.request)
            if args.output == "table":
                _list(jobs, out)
            else:
                _document({"jobs": [entry(job) for job in jobs]}, args.output, out)
            return 0
        one = store.job(args.id)
        if one is None:
            if args.output == "table":
                out.write(f"no job {args.id}\n")
            else:
                sys.stderr.write(f"reconciler: no job {args.id}\n")
            return EXIT_FAILED
        lines = store.logs(one.id)
    finally:
        store.close()
    if args.output == "table":
        _show(one, lines, out)
    else:
        _document({**entry(one), "log": [_log_entry(line) for line in lines]}, args.output, out)
    return 0


def utc(timestamp: str | None) -> str | None:
    """A stored timestamp as ISO-8601 UTC with a Z (`2024-06-01T12:00:00.123Z`); None stays None."""
    if timestamp is None:
        return None
    moment = datetime.fromisoformat(timestamp)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def seconds(job: Job) -> float | None:
    """How long the job ran (finished - started), or None while it runs or when it never started."""
    if job.started_at is None or job.finished_at is None:
        return None
    took = datetime.fromisoformat(job.finished_at) - datetime.fromisoformat(job.started_at)
    return round(max(0.0, took.total_seconds()), 3)


def duration(took: float | None) -> str:
    """A duration as people read it: 2.1s, 3m04s, 1h02m; `-` when not known (still running)."""
    if took is None:
        return "-"
    if took < 60:
        return f"{took:.1f}s"
    whole = int(took)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def entry(job: Job) -> dict[str, object]:
    """A job in the JSON/YAML document (the README documents this shape)."""
    return {
        "id": job.id,
        "type": job.type,
        "request": job.request,
        "profile": job.profile,
        "status": job.status,
        "created": utc(job.created_at),
        "started": utc(job.started_at),
        "finished": utc(job.finished_at),
        "duration_seconds": seconds(job),
        "summary": job.summary or None,
        "error": job.error_message,
        "payload": job.payload,
        "result": job.result,
    }


def _log_entry(line: LogLine) -> dict[str, object]:
    return {"timestamp": utc(line.timestamp), "level": line.level, "message": line.message}


def _document(doc: dict[str, object], output: str, out: TextIO) -> None:
    out.write(json.dumps(doc, indent=2) + "\n" if output == "json" else dump_yaml(doc))


def _list(jobs: list[Job], out: TextIO) -> None:
    console = console_for(out)
    if not jobs:
        print_line(console, "no jobs")
        return
    rows = [
        (
            str(job.id),
            utc(job.created_at) or "-",
            styled(job.status, JOB_STYLES.get(job.status)),
            job.type,
            job.request,
            duration(seconds(job)),
            job.error_message or job.summary or "-",
        )
        for job in jobs
    ]
    print_table(console, table(COLUMNS, rows))
    found = Counter(job.status for job in jobs)
    counts = ", ".join(f"{found[s]} {s}" for s in (*STATUSES, *sorted(set(found) - set(STATUSES))) if found[s])
    print_line(console, f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}: {counts}")


def _show(job: Job, lines: list[LogLine], out: TextIO) -> None:
    console = console_for(out)
    head = styled(f"job {job.id}: {job.type} {job.request} ({job.profile or '-'}): ", None)
    head.append(job.status, style=JOB_STYLES.get(job.status) or "")
    print_line(console, head)
    print_line(
        console,
        f"created {utc(job.created_at)}, started {utc(job.started_at) or '-'}, finished {utc(job.finished_at) or '-'}"
        f", took {duration(seconds(job))}",
    )
    if job.error_message:
        print_line(console, styled(f"error: {job.error_message}", "red"))
    for line in lines:
        print_line(console, f"{utc(line.timestamp)} {line.level:<5} {line.message}")
