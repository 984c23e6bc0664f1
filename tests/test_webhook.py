"""Webhook judging (pure): signatures of Gitea, Forgejo and GitHub; other branches and events ignored."""

from __future__ import annotations

import hashlib
import hmac
import json

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
