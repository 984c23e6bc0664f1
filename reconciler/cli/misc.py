"""`reconciler schema` and `reconciler demo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from reconciler import logs
from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.desired.request import json_schema


def schema_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `schema`."""
    p.add_argument("--profiles", type=Path, help="a profiles folder (default: the shipped profiles)")


def demo_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `demo`."""
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--verbose", action="store_true", help="show the reconciler's log as well")


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    profiles = load_profiles(args.profiles or builtin_profiles_dir())
    out.write(json_schema(profiles))
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Tell the story of one cycle against a throw-away Git repo and a fake Proxmox VE."""
    from reconciler.cli.demo import run_story  # the demo extra (fakepve), imported only when asked for

    if not args.verbose:
        # The story is the output: the deliberately Invalid request's warning would only repeat it. Errors stay.
        json_lines = None if args.log_format is None else args.log_format == "json"
        logs.setup(json_lines=json_lines, stream=sys.stderr, level="error")

    return run_story(out, keep=args.keep)
