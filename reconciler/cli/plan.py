"""`reconciler plan`: what the next pass would do, changing nothing."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from reconciler.cli.common import EXIT_PLAN_CHANGES, config_of
from reconciler.cli.requests import plan_requests


def cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    """Print what the next pass would do, changing nothing: 0 nothing would change, 2 something would."""
    from reconciler.report.plan_text import PlanView, changes, render_json, render_text
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
    )
    out.write(render_json(view) if args.json else render_text(view))
    return EXIT_PLAN_CHANGES if changes(view) else 0
