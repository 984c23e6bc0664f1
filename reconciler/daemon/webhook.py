"""Push webhooks from Gitea, Forgejo and GitHub: HMAC-SHA256 signatures, event types, the pushed branch (pure).

A delivery's body is the JSON itself (content type application/json) or a url-encoded form whose single
field payload holds the JSON (application/x-www-form-urlencoded, GitHub's default). Either way the
signature covers the body as sent, so it is checked before anything is parsed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

# Header -> prefix before the hex digest. Gitea also sends X-Hub-Signature-256, as GitHub does.
SIGNATURE_HEADERS = {
    "x-hub-signature-256": "sha256=",
    "x-gitea-signature": "",
    "x-forgejo-signature": "",
    "x-gogs-signature": "",
}
EVENT_HEADERS = ("x-github-event", "x-gitea-event", "x-forgejo-event", "x-gogs-event")
DELIVERY_HEADERS = ("x-github-delivery", "x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery")
FORM = "application/x-www-form-urlencoded"  # GitHub's default content type (and Gitea's): payload=<url-encoded JSON>
REMEMBERED_DELIVERIES = 1024
REPLAYED = "ignored: replayed delivery"


@dataclass(frozen=True)
class Verdict:
    status: int  # the HTTP status to answer
    message: str
    reconcile: bool = False


def shown(value: object, limit: int = 80) -> str:
    """A value from a delivery as it may appear in an answer or a log line: printable, one line, short."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def signature_ok(secret: bytes, body: bytes, headers: Mapping[str, str]) -> bool:
    """True when any known signature header carries the HMAC-SHA256 of body under secret (constant time)."""
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    for name, prefix in SIGNATURE_HEADERS.items():
        value = headers.get(name)
        if value is None or not value.startswith(prefix):
            continue
        # Compared as bytes: compare_digest refuses str with non-ASCII characters, and a header may hold any.
        given = value[len(prefix) :].strip().lower().encode("utf-8", "replace")
        if hmac.compare_digest(given, expected):
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


def event_type(headers: Mapping[str, str]) -> str | Verdict:
    """The delivery's event type from the forges' headers, or the 400 to answer when none or several differ."""
    events = {headers[h].strip() for h in EVENT_HEADERS if h in headers}
    if not events:
        return Verdict(400, "no event type: none of the X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event headers")
    if len(events) > 1:
        return Verdict(400, "event type headers disagree: " + ", ".join(sorted(shown(e, 20) for e in events)))
    return events.pop()


def _json(text: str | bytes, what: str) -> Any | Verdict:
    try:
        return json.loads(text)
    except RecursionError:  # deeply nested arrays or objects exhaust the parser's recursion limit
        return Verdict(400, f"{what} is JSON nested too deeply")
    except ValueError:  # invalid JSON, and bytes that are not UTF-8 (UnicodeDecodeError)
        return Verdict(400, f"{what} is not JSON")


def judge(secret: bytes, body: bytes, headers: Mapping[str, str], branch: str) -> Verdict:
    """What to answer a webhook delivery, and whether it should start a cycle (headers: lower-case names)."""
    if not signature_ok(secret, body, headers):
        return Verdict(401, "bad or missing signature")
    event = event_type(headers)
    if isinstance(event, Verdict):
        return event
    if event == "ping":  # sent when a hook is created: answering 2xx tells the forge it is set up right
        return Verdict(200, "ignored: ping event")
    if event != "push":
        # Refused, not ignored: the forge then shows the hook as failing, a sign to send push events only.
        return Verdict(400, f"unknown event type {shown(event, 40)}: only push and ping are handled")
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == FORM:
        form = form_payload(body)
        if isinstance(form, Verdict):
            return form
        payload = _json(form, "payload")
    else:
        payload = _json(body, "body")
    if isinstance(payload, Verdict):
        return payload
    if not isinstance(payload, dict):
        return Verdict(400, "push payload is not a JSON object")
    ref = payload.get("ref")
    if not isinstance(ref, str):
        return Verdict(400, "push payload has no ref")
    if ref != f"refs/heads/{branch}":
        return Verdict(202, f"ignored: push to {shown(ref)}")
    return Verdict(202, "accepted: reconciling", reconcile=True)


def delivery_keys(headers: Mapping[str, str], body: bytes) -> frozenset[bytes]:
    """Fixed-size digests of the delivery ids a forge sent (Gitea repeats one id under several names) and of the
    signed body: the id is not signed, so a captured delivery sent again under a new id (or none) is the same
    body; two real pushes never are (each names its own before and after commits)."""
    ids = {
        b"id:" + headers[h].strip().encode("utf-8", "replace") for h in DELIVERY_HEADERS if headers.get(h, "").strip()
    }
    return frozenset(hashlib.sha256(key).digest()[:16] for key in ids | {b"body:" + body})


class Deliveries:
    """The ids of the last signed deliveries answered 2xx, to ignore a replay; memory bounded, thread-safe."""

    def __init__(self, size: int = REMEMBERED_DELIVERIES) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, keys: frozenset[bytes]) -> bool:
        """Remember these keys; False when any was seen already."""
        with self._lock:
            if any(key in self._seen for key in keys):
                return False
            for key in keys:
                self._seen[key] = None
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._seen)
