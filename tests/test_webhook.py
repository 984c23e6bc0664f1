"""Webhook judging (pure): signatures; JSON or form bodies; other branches ignored, unknown events refused; replays."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.daemon.webhook import Deliveries, Verdict, delivery_keys, judge

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


def test_pushes_to_other_branches_and_pings_are_ignored() -> None:
    verdict = judge(SECRET, BODY, {"x-gitea-signature": SIG, "x-gitea-event": "push"}, "production")
    assert (verdict.status, verdict.reconcile, verdict.message) == (202, False, "ignored: push to refs/heads/main")
    ping = judge(SECRET, BODY, {"x-hub-signature-256": f"sha256={SIG}", "x-github-event": "ping"}, "main")
    assert (ping.status, ping.reconcile) == (200, False)


def test_unknown_missing_or_conflicting_event_types_are_400_and_never_reconcile() -> None:
    # The event header is not signed: only push reconciles, only ping is a 2xx, and no header is no push.
    for headers, message in (
        ({"x-github-event": "issues"}, "unknown event type issues: only push and ping are handled"),
        ({"x-gitea-event": "Push"}, "unknown event type Push: only push and ping are handled"),
        ({"x-gitea-event": "push\x1b[2J" + "x" * 200}, None),
        ({}, "no event type: none of the X-GitHub-Event, X-Gitea-Event, X-Forgejo-Event headers"),
        ({"x-gitea-event": "push", "x-github-event": "create"}, "event type headers disagree: create, push"),
    ):
        verdict = judge(SECRET, BODY, {"x-gitea-signature": SIG, **headers}, "main")
        assert (verdict.status, verdict.reconcile) == (400, False), headers
        if message is not None:
            assert verdict.message == message
        assert verdict.message.isprintable() and len(verdict.message) < 120, verdict.message


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


def signed(body: bytes, event: str = "push", **more: str) -> dict[str, str]:
    return {"x-gitea-signature": sign(body), "x-gitea-event": event, **more}


def test_signed_bodies_that_are_not_a_push_object_are_400_in_plain_words() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000  # json.loads raises RecursionError here, not ValueError
    for body, message in (
        (deep, "body is JSON nested too deeply"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "body is JSON nested too deeply"),
        (b'{"ref": "refs/heads/\xff\xfe"}', "body is not JSON"),  # not UTF-8
        (b"\xef\xbb\xbf\xff", "body is not JSON"),
        (b"", "body is not JSON"),
        (b"[]", "push payload is not a JSON object"),
        (b'"refs/heads/main"', "push payload is not a JSON object"),
        (b"null", "push payload is not a JSON object"),
        (b"{}", "push payload has no ref"),
        (b'{"ref": ["refs/heads/main"]}', "push payload has no ref"),
        (b'{"ref": null}', "push payload has no ref"),
    ):
        assert deliver(body, signed(body), "main") == (400, message, False), body[:30]
    form = ("payload=" + quote_plus("[" * 100_000)).encode()
    assert deliver(form, {**signed(form), "content-type": FORM}, "main") == (
        400,
        "payload is JSON nested too deeply",
        False,
    )


def test_a_signature_header_with_non_ascii_characters_is_401_not_an_error() -> None:
    # hmac.compare_digest raises TypeError on str with non-ASCII characters; headers arrive as Latin-1 text.
    for value in ("é" * 64, SIG[:-1] + "é", "\x00" * 64, "sha256=" + "ß" * 64):
        for name in ("x-gitea-signature", "x-hub-signature-256"):
            assert deliver(BODY, {name: value, "x-gitea-event": "push"}, "main") == (
                401,
                "bad or missing signature",
                False,
            )


def test_a_pushed_ref_is_shown_printable_and_short() -> None:
    body = json.dumps({"ref": "refs/heads/x\n\x1b[31mred" + "y" * 500}).encode()
    status, message, reconcile = deliver(body, signed(body), "main")
    assert (status, reconcile) == (202, False)
    assert message.startswith("ignored: push to refs/heads/x??[31mredyyy") and message.isprintable()
    assert len(message) < 120


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
            max_leaves=30,
        ).map(lambda doc: json.dumps(doc).encode()),
        st.text(max_size=300).map(lambda t: ("payload=" + quote_plus(t)).encode()),
    ),
    headers=st.dictionaries(
        st.sampled_from(["x-gitea-event", "x-github-event", "content-type", "x-gitea-delivery", "x-other"]),
        st.one_of(st.sampled_from(["push", "ping", FORM, JSON, "issues", ""]), st.text(max_size=30)),
        max_size=5,
    ),
    sign_it=st.booleans(),
)
def test_any_delivery_gets_a_verdict_and_only_a_signed_push_to_the_branch_reconciles(
    body: bytes, headers: dict[str, str], sign_it: bool
) -> None:
    if sign_it:
        headers = {**headers, "x-gitea-signature": sign(body)}
    verdict = judge(SECRET, body, headers, "main")
    assert verdict.status in (200, 202, 400, 401)
    assert verdict.message.isprintable() and len(verdict.message) < 200
    if verdict.reconcile:
        assert sign_it and headers.get("x-gitea-event", headers.get("x-github-event")) == "push"
        assert verdict.status == 202
    if not sign_it:
        assert verdict == Verdict(401, "bad or missing signature")


def test_replayed_delivery_ids_are_recognised_and_memory_stays_bounded() -> None:
    seen = Deliveries(size=16)
    gitea = delivery_keys({k.lower(): v for k, v in gitea_push(BODY, JSON).items()}, BODY)
    assert len(gitea) == 2  # Gitea repeats one id under three names; and the body
    assert seen.first_time(gitea)
    assert not seen.first_time(gitea)
    for n in range(100):
        assert seen.first_time(delivery_keys({"x-github-delivery": f"id-{n}"}, f"push {n}".encode()))
        # The same id with another body, and the same body under another id or none: both replays.
        assert not seen.first_time(delivery_keys({"x-gitea-delivery": f" id-{n} "}, b"other"))
        assert not seen.first_time(delivery_keys({"x-gitea-delivery": f"new-{n}"}, f"push {n}".encode()))
        assert not seen.first_time(delivery_keys({}, f"push {n}".encode()))
        assert len(seen) <= 16
    assert not seen.first_time(delivery_keys({"x-github-delivery": "id-99"}, b"x"))
    assert seen.first_time(gitea)  # long forgotten: memory is bounded, so a very old id is new again
