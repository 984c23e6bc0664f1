"""The `reconciler` command line: the parser and main; each command lives in a module of its own."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from reconciler import __version__, logs
from reconciler.cli.act import cmd_once, cmd_run, once_arguments, run_arguments
from reconciler.cli.common import EXIT_ERROR, EXIT_PLAN_ERROR, HelpFormatter, Parser
from reconciler.cli.jobs import add_arguments as jobs_arguments
from reconciler.cli.jobs import cmd_jobs
from reconciler.cli.misc import cmd_demo, cmd_schema, demo_arguments, schema_arguments
from reconciler.cli.plan import add_arguments as plan_arguments
from reconciler.cli.plan import cmd_plan
from reconciler.cli.reconcile import add_arguments as reconcile_arguments
from reconciler.cli.reconcile import cmd_reconcile
from reconciler.cli.status import add_arguments as status_arguments
from reconciler.cli.status import cmd_status
from reconciler.cli.validate import add_arguments as validate_arguments
from reconciler.cli.validate import cmd_validate
from reconciler.config import (
    DEFAULT_CONFIG,
)
from reconciler.lock import AlreadyRunning
from reconciler.model.errors import ConfigError, GitError, ProxmoxError, StateError


def parser() -> Parser:
    # Global options work before or after the command: the command's copy has no default of its own, so it
    # sets the value only when given there (SUPPRESS), and the top level's default stands otherwise.
    log_help = "how to log: console (readable) or json (one object a line); default: console on a terminal"
    common = Parser(add_help=False)
    common.add_argument("--log-format", choices=("json", "console"), default=argparse.SUPPRESS, help=log_help)
    top = Parser(
        prog="reconciler",
        description="GitOps reconciler for Proxmox VE homelabs",
        formatter_class=HelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"reconciler {__version__}")
    top.add_argument("--log-format", choices=("json", "console"), default=None, help=log_help)
    top.add_argument(
        "--config", type=Path, default=None, help=f"the config file (a command's default: {DEFAULT_CONFIG})"
    )
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, fn: object, help_text: str) -> Parser:
        p: Parser = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            formatter_class=HelpFormatter,
        )
        p.set_defaults(fn=fn)
        return p

    # Each command's module declares its options beside the function that reads them.
    for name, fn, add_arguments, text in (
        ("validate", cmd_validate, validate_arguments, "check request files offline (for CI and pre-commit)"),
        (
            "plan",
            cmd_plan,
            plan_arguments,
            "print what the next pass would do, changing nothing (beside a running daemon)",
        ),
        (
            "once",
            cmd_once,
            once_arguments,
            "reconcile until nothing started is still running, pushing statuses as they are known",
        ),
        (
            "run",
            cmd_run,
            run_arguments,
            "run the daemon: reconcile at start, on a timer, a webhook or a watched change",
        ),
        (
            "reconcile",
            cmd_reconcile,
            reconcile_arguments,
            "ask the running daemon for a pass now, wait for it and print what changed",
        ),
        ("jobs", cmd_jobs, jobs_arguments, "list jobs, or show one job with its log"),
        (
            "status",
            cmd_status,
            status_arguments,
            "where every request stands, from the status files at the remote's head (no daemon needed)",
        ),
        ("get", cmd_status, status_arguments, "the same as status"),
        ("schema", cmd_schema, schema_arguments, "print the JSON Schema of request files"),
        ("demo", cmd_demo, demo_arguments, "run one cycle against a throw-away Git repo and a fake Proxmox VE"),
    ):
        add_arguments(command(name, fn, text))
    return top


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    top = parser()
    args, extra = top.parse_known_args(argv)
    if extra:
        top.usage_error = EXIT_PLAN_ERROR if args.command == "plan" else top.usage_error
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    out = out or sys.stdout
    json_lines = None if args.log_format is None else args.log_format == "json"
    # The daemon logs to stdout (journald keeps it); other commands print results there, so they log to stderr.
    quiet = args.command == "demo" and not args.verbose  # the demo's story is its output
    logs.setup(
        json_lines=json_lines,
        stream=sys.stdout if args.command == "run" else sys.stderr,
        level="warning" if quiet else "info",
    )
    error = EXIT_PLAN_ERROR if args.command == "plan" else EXIT_ERROR
    # Whatever the commands create (the job database, the checkout, the lock) is the owner's alone.
    umask = os.umask(0o077)
    try:
        code: int = args.fn(args, out)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"reconciler: {exc.source}: {problem}\n")
        return error
    except (GitError, ProxmoxError, StateError, AlreadyRunning) as exc:
        sys.stderr.write(f"reconciler: {exc}\n")
        return error
    finally:
        os.umask(umask)
    return code
