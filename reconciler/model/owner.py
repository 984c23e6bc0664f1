"""How a guest says the reconciler owns it: two Proxmox tags, `reconciler` and `reconciler.<request>`.

Tags show in /cluster/resources, so one call finds every owned guest after a restart; a guest without
both tags is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

OWNER_TAG = "reconciler"
NAME_PREFIX = "reconciler."
MONITORING_TAG = "monitoring"


def tags_for(request: str, monitoring: bool) -> list[str]:
    """The tags a new container carries, in Proxmox's order (sorted)."""
    return sorted([OWNER_TAG, NAME_PREFIX + request] + ([MONITORING_TAG] if monitoring else []))


def owner_of(tags: Iterable[str]) -> str | None:
    """The request a guest belongs to, or None when the reconciler does not own it."""
    tags = list(tags)
    if OWNER_TAG not in tags:
        return None
    names = [t[len(NAME_PREFIX) :] for t in tags if t.startswith(NAME_PREFIX)]
    return names[0] if len(names) == 1 and names[0] else None


_NOTE_END = " Change the request file, not this guest."


def description_for(request: str, path: str, text: str, profile: str) -> str:
    """The container's description: the operator's text, then where it came from and its profile."""
    note = f"Managed by reconciler for request {request} ({path}, profile {profile}).{_NOTE_END}"
    return f"{text}\n\n{note}" if text else note


# Only the note at the very end counts: the operator's text comes first and may quote a note of its own
# (`... profile web-app).` in a description must not pass for what the guest was made with). Proxmox may add
# a line break at the end. The path is matched greedily, so the last `, profile ` is the note's own.
_PROFILE = re.compile(
    r"(?:\A|\n\n)Managed by reconciler for request [a-z0-9-]+ \(.*, profile ([a-z0-9-]+)\)\."
    + re.escape(_NOTE_END)
    + r"\s*\Z",
    re.DOTALL,  # a path may hold a line break
)


def profile_of(description: str | None) -> str | None:
    """The profile a guest was made with, from the note that ends its description; None when it is not there."""
    found = _PROFILE.search(description or "")
    return found.group(1) if found else None
