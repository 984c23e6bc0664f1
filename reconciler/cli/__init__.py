"""The `reconciler` command line: validate, plan, once, run, jobs, schema, demo."""

from reconciler.cli.main import main

__all__ = ["main"]
