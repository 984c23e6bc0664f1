"""The few named errors the reconciler raises; each says whether trying again later can help.

`temporary` is decided once, where the error is raised (in each gateway): a dropped connection, a 5xx or a
lock may pass by itself; a refused parameter, a refused permission or a broken file will not until someone
changes something.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the reconciler raises on purpose."""

    temporary: bool = False


class ConfigError(ReconcilerError):
    """The daemon's config file, a profile or the environment is unusable."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class GitError(ReconcilerError):
    """A Git operation (clone, fetch, commit, push) failed."""

    def __init__(self, step: str, reason: str, temporary: bool = False) -> None:
        self.step = step
        self.reason = reason
        self.temporary = temporary
        super().__init__(f"git {step}: {reason}")


class ProxmoxError(ReconcilerError):
    """A Proxmox API call failed or a task ended in an error; reason is Proxmox's own message."""

    def __init__(self, step: str, reason: str, status: int | None = None, temporary: bool = False) -> None:
        self.step = step
        self.reason = reason
        self.status = status
        self.temporary = temporary
        super().__init__(f"{step}: {reason}")


class StateError(ReconcilerError):
    """The job database cannot be used as it is (e.g. it was written by a newer release)."""

    def __init__(self, path: str, reason: str, temporary: bool = False) -> None:
        self.path = path
        self.reason = reason
        self.temporary = temporary  # a database locked by another process may be free later
        super().__init__(f"{path}: {reason}")


class SetupError(ReconcilerError):
    """A setup step failed in a container, or its node could not be reached; output is what it printed last."""

    def __init__(self, step: str, reason: str, output: tuple[str, ...] = (), temporary: bool = True) -> None:
        self.step = step
        self.reason = reason
        self.output = output
        self.temporary = temporary
        super().__init__(f"{step}: {reason}")
