"""Status files, `status/<name>.yaml`: where each request stands, in Git beside it.

Their content is a pure function of the outcome, never of the clock, so a cycle that changes nothing
writes nothing and commits nothing.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

from reconciler.problems import dump_yaml, load_yaml

HEADER = "# Written by reconciler for {path}; the next cycle overwrites edits.\n"


@dataclass(frozen=True)
class Status:
    name: str
    request: str  # the request file's path
    phase: str
    message: str
    revision: str | None = None
    vmid: int | None = None
    node: str | None = None
    address: str | None = None
    service: str | None = None
    job: int | None = None
    problems: tuple[str, ...] = ()

    def render(self) -> str:
        doc = {"apiVersion": "reconciler/v1", "kind": "Status", **asdict(self)}
        if self.problems:
            doc["problems"] = list(self.problems)
        else:
            del doc["problems"]
        return HEADER.format(path=self.request) + dump_yaml(doc)

    def same_as(self, other: Status | None) -> bool:
        """Equal but for the job id: then the older file stands, and its job still explains it."""
        return other is not None and replace(self, job=None) == replace(other, job=None)


@functools.lru_cache(maxsize=8192)
def parse(text: bytes) -> Status | None:
    """A status file the reconciler wrote, or None for anything else (cached: most are unchanged)."""
    if not text.startswith(b"# Written by reconciler"):
        return None
    try:
        doc = load_yaml(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    fields = {k: v for k, v in doc.items() if k in Status.__dataclass_fields__}
    if isinstance(fields.get("problems"), list):
        fields["problems"] = tuple(fields["problems"])
    try:
        return Status(**fields)
    except TypeError:
        return None


def is_generated(text: bytes) -> bool:
    return text.startswith(b"# Written by reconciler")
