"""`reconciler plan`: what the next pass would do, changing nothing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from reconciler.cli.common import EXIT_PLAN_CHANGES, EXIT_PLAN_ERROR, Parser, config_of
from reconciler.cli.output import colour_wanted, console_for, plan_line, print_line
from reconciler.cli.requests import plan_requests
from reconciler.config import DEFAULT_CONFIG
from reconciler.parse import dump_yaml


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `plan`."""
    assert isinstance(p, Parser)
    p.usage_error = EXIT_PLAN_ERROR
    p.epilog = "exit status: 0 nothing would change, 2 something would (an action or a file), 1 an error"
    p.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help=f"the config file (default: {DEFAULT_CONFIG})"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--ref", metavar="BRANCH", help="plan the request files of this branch of the remote")
    source.add_argument(
        "--requests",
        type=Path,
        metavar="DIR",
        help="plan the request files in this directory (a pull request's working tree, e.g. requests/)",
    )
    p.add_argument(
        "-o", "--output", choices=("text", "json", "yaml"), default="text", help="text for people, or one document"
    )
    # The older spelling of -o json, kept for the scripts and CI jobs that use it.
    p.add_argument("--json", dest="output", action="store_const", const="json", help=argparse.SUPPRESS)


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    """Print what the next pass would do, changing nothing: 0 nothing would change, 2 something would."""
    from reconciler.report.plan_text import PlanView, changes, document, render_json, render_text
    from reconciler.runtime import open_planner

    config = config_of(args)
    requests, unread = plan_requests(args.requests, config.paths.requests) if args.requests is not None else (None, [])
    planner = open_planner(config, ref=args.ref)
    try:
        if planner.history is not None:
            sys.stderr.write(f"reconciler: {planner.history}\n")
        where = str(args.requests) if args.requests is not None else None
        preview = planner.preview(requests, where=where, refused=unread)
    finally:
        planner.close()
    plan = preview.decision.plan
    view = PlanView(
        branch=config.git.branch,
        revision=preview.source.revision,
        request_count=len(preview.source.requests),
        actions=plan.actions,
        standings=plan.standings,
        files=preview.files,
        caddy_files=preview.source.caddy,
        caddy_dir=config.paths.caddy,
        transport=config.provision.transport,
        held=plan.held.reason if plan.held is not None else None,
        requests_from=preview.requests_from,
        requests_revision=preview.requests_revision,
        history=planner.history is None,
        site_file=config.paths.site,
        hosts_file=config.dns.hosts_file if config.dns else None,
        targets_dir=config.prometheus.targets,
    )
    if args.output == "json":
        out.write(render_json(view))
    elif args.output == "yaml":
        out.write(dump_yaml(document(view)))
    elif colour_wanted(out):
        console = console_for(out)
        for line in render_text(view).splitlines():
            print_line(console, plan_line(line))
    else:
        out.write(render_text(view))
    return EXIT_PLAN_CHANGES if changes(view) else 0
