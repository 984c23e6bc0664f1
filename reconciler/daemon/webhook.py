"""Push webhooks from Gitea, Forgejo and GitHub: HMAC-SHA256 signatures and the pushed branch (pure).

A delivery's body is the JSON itself (content type application/json) or a url-encoded form whose single
field payload holds the JSON (application/x-www-form-urlencoded, GitHub's default). Either way the
signature covers the body as sent, so it is checked before anything is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

# Header -> prefix before the hex digest. Gitea also sends X-Hub-Signature-256, as GitHub does.
SIGNATURE_HEADERS = {
    "x-hub-signature-256": "sha256=",
    "x-gitea-signature": "",
    "x-forgejo-signature": "",
    "x-gogs-signature": "",
}
EVENT_HEADERS = ("x-github-event", "x-gitea-event", "x-forgejo-event", "x-gogs-event")
FORM = "application/x-www-form-urlencoded"  # GitHub's default content type (and Gitea's): payload=<url-encoded JSON>


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


def form_payload(body: bytes) -> str | Verdict:
    """The single payload field of a url-encoded form body, or the 400 to answer."""
    try:
        # parse_qs on bytes re-encodes values as ASCII and fails on any non-ASCII payload: decode first.
        fields = parse_qs(body.decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return Verdict(400, "form body is not UTF-8")
    values = fields.get("payload", [])
    if not values:
        return Verdict(400, "form body has no payload field")
    if len(values) > 1:
        return Verdict(400, "form body has more than one payload field")
    return values[0]


def judge(secret: bytes, body: bytes, headers: Mapping[str, str], branch: str) -> Verdict:
    """What to answer a webhook delivery, and whether it should start a cycle (headers: lower-case names)."""
    if not signature_ok(secret, body, headers):
        return Verdict(401, "bad or missing signature")
    event = next((headers[h] for h in EVENT_HEADERS if h in headers), "push")
    if event != "push":
        return Verdict(200, f"ignored: {event} event")
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == FORM:
        form = form_payload(body)
        if isinstance(form, Verdict):
            return form
        try:
            payload = json.loads(form)
        except ValueError:
            return Verdict(400, "payload is not JSON")
    else:
        try:
            payload = json.loads(body)
        except ValueError:
            return Verdict(400, "body is not JSON")
    ref = payload.get("ref") if isinstance(payload, dict) else None
    if ref != f"refs/heads/{branch}":
        return Verdict(202, f"ignored: push to {ref}")
    return Verdict(202, "accepted: reconciling", reconcile=True)
