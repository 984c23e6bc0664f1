"""The few named errors the reconciler raises; each carries what the operator needs to act."""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the reconciler raises on purpose."""


class ConfigError(ReconcilerError):
    """The daemon's config file, a profile or the environment is unusable; the daemon does not start."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class GitError(ReconcilerError):
    """A Git operation (clone, fetch, commit, push) failed."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"git {step}: {reason}")


class ProxmoxError(ReconcilerError):
    """A Proxmox API call failed or a task ended in an error; reason is Proxmox's own message."""

    def __init__(self, step: str, reason: str, status: int | None = None) -> None:
        self.step = step
        self.reason = reason
        self.status = status
        super().__init__(f"{step}: {reason}")


class RequestFailed(ReconcilerError):
    """Applying one request failed at a named step; the rest of the cycle goes on."""

    def __init__(self, request: str, step: str, reason: str) -> None:
        self.request = request
        self.step = step
        self.reason = reason
        super().__init__(f"request {request}: {step} failed: {reason}")
