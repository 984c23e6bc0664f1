"""Push webhooks from Gitea, Forgejo and GitHub: HMAC-SHA256 signatures and the pushed branch (pure)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

# Header -> prefix before the hex digest. Gitea also sends X-Hub-Signature-256, as GitHub does.
SIGNATURE_HEADERS = {
    "x-hub-signature-256": "sha256=",
    "x-gitea-signature": "",
    "x-forgejo-signature": "",
    "x-gogs-signature": "",
}
EVENT_HEADERS = ("x-github-event", "x-gitea-event", "x-forgejo-event", "x-gogs-event")


@dataclass(frozen=True)
class Verdict:
    status: int  # the HTTP status to answer
    message: str
    reconcile: bool = False


def signature_ok(secret: bytes, body: bytes, headers: Mapping[str, str]) -> bool:
    """True when any known signature header carries the HMAC-SHA256 of body under secret."""
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    for name, prefix in SIGNATURE_HEADERS.items():
        value = headers.get(name)
        if (
            value is not None
            and value.startswith(prefix)
            and hmac.compare_digest(value[len(prefix) :].strip().lower(), expected)
        ):
            return True
    return False


def judge(secret: bytes, body: bytes, headers: Mapping[str, str], branch: str) -> Verdict:
    """What to answer a webhook delivery, and whether it should start a cycle (headers: lower-case names)."""
    if not signature_ok(secret, body, headers):
        return Verdict(401, "bad or missing signature")
    event = next((headers[h] for h in EVENT_HEADERS if h in headers), "push")
    if event != "push":
        return Verdict(200, f"ignored: {event} event")
    try:
        payload = json.loads(body)
    except ValueError:
        return Verdict(400, "body is not JSON")
    ref = payload.get("ref") if isinstance(payload, dict) else None
    if ref != f"refs/heads/{branch}":
        return Verdict(202, f"ignored: push to {ref}")
    return Verdict(202, "accepted: reconciling", reconcile=True)
