"""What every command shares: exit statuses, the config of a command, the start-up checks of one that acts."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from reconciler.config import (
    DEFAULT_CONFIG,
    GIT_TOKEN_ENV,
    TOKEN_SECRET_ENV,
    TSIG_SECRET_ENV,
    Config,
    load_config,
    read_secret,
    refuse_open_files,
)

# Commands import what they need when they run: `validate` (a pre-commit hook) stays quick and needs no
# proxmoxer, git or the demo extra.
EXIT_FAILED = 1  # validate, once: some request is Failed or Invalid; jobs: no such job
EXIT_ERROR = 2  # validate, once, jobs, run: the command could not run (config, Git, Proxmox, the database)
# `plan` exits as `terraform plan -detailed-exitcode`, for CI: 0 nothing would change, 2 something would (an
# action, or a file to write or remove), 1 the command could not run (a usage error included).
EXIT_PLAN_CHANGES = 2
EXIT_PLAN_ERROR = 1


def config_of(args: argparse.Namespace) -> Config:
    return load_config(args.config or DEFAULT_CONFIG)


def starting(args: argparse.Namespace) -> tuple[Config, dict[str, str]]:
    """The config of a process that will act (run, once), after the start-up checks, and its environment.

    The config file may not be open to others nor a key file to anyone but its owner. Each secret is read once
    from the environment (stripped, refused with a control character in it, registered with the log scrubber);
    the environment returned holds the clean values. They leave the process's own environment, so that no child
    inherits one: not git (GitPython runs `git version` as it is imported, with os.environ), not ssh, not a hook.
    """
    path = args.config or DEFAULT_CONFIG
    config = load_config(path)
    refuse_open_files(path, config)
    return config, take_secrets(config)


def take_secrets(config: Config) -> dict[str, str]:
    """The process's environment with each secret read once (stripped, checked, registered with the log
    scrubber), the secrets then removed from os.environ: call it before GitPython is imported."""
    environ = dict(os.environ)
    tsig = config.dns.rfc2136.key_secret_env if config.dns and config.dns.rfc2136 else TSIG_SECRET_ENV
    for name in dict.fromkeys(
        (
            TOKEN_SECRET_ENV,
            GIT_TOKEN_ENV,
            TSIG_SECRET_ENV,
            tsig,
            config.http.webhook_secret_env,
            config.http.api_token_env,
        )
    ):
        secret = read_secret(name, environ)
        os.environ.pop(name, None)
        if secret is None:
            environ.pop(name, None)
        else:
            environ[name] = secret.reveal()
    return environ


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help shows its default, unless it says it already or there is none worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {action.default})"


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors exit with usage_error: 2 as argparse's do, but 1 under `plan`,
    whose 2 means that something would change."""

    usage_error = 2

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_error, f"{self.prog}: error: {message}\n")
