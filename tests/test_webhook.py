"""Webhook judging (pure): Gitea, Forgejo and GitHub signatures; JSON or form bodies; other branches, events ignored."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import quote_plus

from reconciler.daemon.webhook import judge

SECRET = b"s3cret"
BODY = json.dumps({"ref": "refs/heads/main"}).encode()
SIG = hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()


def test_each_forges_signature_header_is_accepted() -> None:
    for headers in (
        {"x-gitea-signature": SIG, "x-gitea-event": "push"},
        {"x-forgejo-signature": SIG, "x-forgejo-event": "push"},
        {"x-hub-signature-256": f"sha256={SIG}", "x-github-event": "push"},
    ):
        verdict = judge(SECRET, BODY, headers, "main")
        assert (verdict.status, verdict.reconcile) == (202, True), headers


def test_a_bad_missing_or_misplaced_signature_is_401_and_never_reconciles() -> None:
    for headers in (
        {},
        {"x-gitea-signature": "0" * 64},
        {"x-hub-signature-256": SIG},  # GitHub's needs its sha256= prefix
        {"x-gitea-signature": hmac.new(b"other", BODY, hashlib.sha256).hexdigest()},
        {"x-gitea-signature": SIG[:-1]},
    ):
        verdict = judge(SECRET, BODY, headers, "main")
        assert (verdict.status, verdict.reconcile) == (401, False), headers
    assert judge(SECRET, BODY + b" ", {"x-gitea-signature": SIG}, "main").status == 401


def test_pushes_to_other_branches_and_other_events_are_ignored() -> None:
    verdict = judge(SECRET, BODY, {"x-gitea-signature": SIG}, "production")
    assert (verdict.status, verdict.reconcile, verdict.message) == (202, False, "ignored: push to refs/heads/main")
    ping = judge(SECRET, BODY, {"x-hub-signature-256": f"sha256={SIG}", "x-github-event": "ping"}, "main")
    assert (ping.status, ping.reconcile) == (200, False)


# GitHub's and Gitea's own deliveries: the body as JSON or as a form (payload=<url-encoded JSON>), signed as sent.
FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
PUSH = (FIXTURES / "github-push.json").read_text()  # a push to refs/heads/master, from @octokit/webhooks-examples
PING = (FIXTURES / "github-ping.json").read_text()
PUSH_BRANCH = json.loads(PUSH)["ref"].removeprefix("refs/heads/")
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


def encode(payload: str, content_type: str) -> bytes:
    """The body a forge sends for this JSON payload under this content type."""
    return (payload if content_type == JSON else "payload=" + quote_plus(payload)).encode()


def sign(body: bytes) -> str:
    return hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def github(body: bytes, event: str, content_type: str) -> dict[str, str]:
    """The headers GitHub sends with a delivery."""
    return {
        "Content-Type": content_type,
        "User-Agent": "GitHub-Hookshot/a1b2c3d",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": f"sha256={sign(body)}",
    }


def gitea_push(body: bytes, content_type: str) -> dict[str, str]:
    """The headers Gitea sends with a push."""
    delivery = "f6266f16-1bf3-46a5-9ea4-602e06ead473"
    return {
        "Content-Type": content_type,
        "X-Gitea-Event": "push",
        "X-Gitea-Signature": sign(body),
        "X-Hub-Signature-256": f"sha256={sign(body)}",
        "X-GitHub-Event": "push",
        "X-Gogs-Event": "push",
        "X-Gitea-Delivery": delivery,
        "X-GitHub-Delivery": delivery,
        "X-Gogs-Delivery": delivery,
    }


def deliver(body: bytes, headers: dict[str, str], branch: str) -> tuple[int, str, bool]:
    """What the sender sees: the server hands judge the header names in lower case."""
    verdict = judge(SECRET, body, {name.lower(): value for name, value in headers.items()}, branch)
    return verdict.status, verdict.message, verdict.reconcile


def test_githubs_push_example_reconciles_delivered_as_json_and_as_form() -> None:
    for content_type in (JSON, FORM):
        body = encode(PUSH, content_type)
        assert deliver(body, github(body, "push", content_type), PUSH_BRANCH) == (
            202,
            "accepted: reconciling",
            True,
        ), content_type


def test_a_form_hook_answers_githubs_ping_then_reconciles_its_push() -> None:
    # GitHub pings a hook when it is created (content type form unless told otherwise), then sends pushes.
    ping = encode(PING, FORM)
    assert deliver(ping, github(ping, "ping", FORM), PUSH_BRANCH) == (200, "ignored: ping event", False)
    push = encode(PUSH, FORM)
    assert deliver(push, github(push, "push", FORM), PUSH_BRANCH) == (202, "accepted: reconciling", True)


def test_giteas_push_reconciles_delivered_as_json_and_as_form() -> None:
    payload = json.dumps(
        {
            "ref": "refs/heads/main",
            "before": "28e1879d029cb852e4844d9c718537df08844e03",
            "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
            "compare_url": "https://git.example.org/infra/hosts/compare/28e1879...bffeb74",
            "commits": [
                {
                    "id": "bffeb74224043ba2feb48d137756c8a9331c449a",
                    "message": "Grow the cache & proxy: +2 GiB, a=b, for Zoë\n",  # &, +, =, non-ASCII
                    "author": {"name": "Zoë", "email": "zoe+infra@example.org", "username": "zoe"},
                }
            ],
            "repository": {"full_name": "infra/hosts", "default_branch": "main"},
            "pusher": {"login": "zoe"},
        },
        ensure_ascii=False,
    )
    for content_type in (JSON, FORM):
        body = encode(payload, content_type)
        assert deliver(body, gitea_push(body, content_type), "main") == (202, "accepted: reconciling", True)
        assert deliver(body, gitea_push(body, content_type), "production") == (
            202,
            "ignored: push to refs/heads/main",
            False,
        )


def test_a_form_is_signed_as_sent_and_tampering_after_signing_is_401() -> None:
    body = encode(PUSH, FORM)
    headers = github(body, "push", FORM)
    assert deliver(body, headers, PUSH_BRANCH) == (202, "accepted: reconciling", True)
    tampered = encode(PUSH.replace('"after": "6113728f', '"after": "deadbeef', 1), FORM)
    assert tampered != body
    assert deliver(tampered, headers, PUSH_BRANCH) == (401, "bad or missing signature", False)
    # A signature over the JSON inside is not one over the form that carried it.
    assert deliver(body, github(PUSH.encode(), "push", FORM), PUSH_BRANCH) == (401, "bad or missing signature", False)


def test_a_signed_form_without_a_payload_field_is_400() -> None:
    for body in (
        b"",
        b"ref=refs%2Fheads%2Fmain",
        PUSH.encode(),  # JSON sent under the form content type
    ):
        assert deliver(body, github(body, "push", FORM), PUSH_BRANCH) == (
            400,
            "form body has no payload field",
            False,
        ), body[:40]


def test_a_signed_form_whose_payload_is_not_json_is_400() -> None:
    for body in (b"payload=", b"payload=ref%3Drefs%2Fheads%2Fmain", encode(PUSH[:-20], FORM)):
        assert deliver(body, github(body, "push", FORM), PUSH_BRANCH) == (400, "payload is not JSON", False), body[:40]


def test_a_signed_form_with_two_payloads_or_bytes_that_are_not_utf8_is_400() -> None:
    two = encode(PUSH, FORM) + b"&" + encode(PUSH, FORM)
    assert deliver(two, github(two, "push", FORM), PUSH_BRANCH) == (
        400,
        "form body has more than one payload field",
        False,
    )
    for raw in (b"payload=\xff", b"payload=%FF"):
        assert deliver(raw, github(raw, "push", FORM), PUSH_BRANCH) == (400, "form body is not UTF-8", False), raw
