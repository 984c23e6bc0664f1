"""Setup inside a container: the ordered steps a request's profile asks for, and what the last run did.

A step is a fixed script shipped with the reconciler plus the arguments it is given. Values from a request
(hostname, domain, port, page content) travel only as arguments, never inside the script, so they stay data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from reconciler.model.vocab import StepName


@dataclass(frozen=True)
class Step:
    """One setup step: run `script` with `sh -s -- *args` inside the container."""

    name: StepName
    summary: str  # what it does, for plans and job logs
    script: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setup:
    """The steps to run in a container after it is created and started, in order."""

    steps: tuple[Step, ...] = ()
    # Set on the container by the node (`pct set --features`) before its first start: only root@pam may.
    node_features: tuple[str, ...] = ()

    @cached_property
    def digest(self) -> str:
        """Changes whenever anything a step would do changes: then setup runs again."""
        h = hashlib.sha256()
        for item in (*self.node_features, *(part for s in self.steps for part in (s.name, s.script, *s.args))):
            h.update(item.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]

    def names(self) -> str:
        return ", ".join(s.name for s in self.steps)


@dataclass(frozen=True)
class SetupRecord:
    """The last setup that succeeded in a request's container, as the job database remembers it."""

    vmid: int
    digest: str
    job_id: int | None = None

    def done(self, vmid: int, setup: Setup) -> bool:
        """Whether these very steps already succeeded in this very container."""
        return self.vmid == vmid and self.digest == setup.digest
