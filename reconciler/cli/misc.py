"""`reconciler schema` and `reconciler demo`."""

from __future__ import annotations

import argparse
from typing import TextIO

from reconciler.desired.profile import builtin_profiles_dir, load_profiles
from reconciler.desired.request import json_schema


def cmd_schema(args: argparse.Namespace, out: TextIO) -> int:
    profiles = load_profiles(args.profiles or builtin_profiles_dir())
    out.write(json_schema(profiles))
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from reconciler.demo import run_demo

    return run_demo(out, keep=args.keep)
