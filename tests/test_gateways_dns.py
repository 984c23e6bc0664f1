"""The DNS gateway against a real BIND on loopback: signed updates with prerequisites, and signed transfers.

Every outcome is checked by asking the server itself (plain dnspython queries), never through the gateway.
"""

from __future__ import annotations

import base64
import secrets
import socket
import time
from collections.abc import Callable

import pytest
from conftest import CLOSED, FROZEN, OTHER_TXT, ZONE, Bind, free_dual_port

from reconciler.gateways.dns import DnsError, DnsServer
from reconciler.model.dns import Owner, Record, RecordChange, heritage
from reconciler.model.secret import Secret
from reconciler.model.vocab import RecordOp, RecordType

WEB = "web.lab.example."
OURS = heritage("reconciler", "web")


def a(name: str, address: str, ttl: int = 300) -> Record:
    return Record(name, RecordType.A, address, ZONE, ttl)


def cname(name: str, target: str) -> Record:
    return Record(name, RecordType.CNAME, target, ZONE)


def refused(bind: Bind, call: Callable[[], object]) -> DnsError:
    """The DnsError a call raises; it must never carry the secret, in any form."""
    with pytest.raises(DnsError) as caught:
        call()
    error = caught.value
    for text in (str(error), repr(error), error.reason, error.step):
        assert bind.secret not in text
        assert base64.b64decode(bind.secret).hex() not in text
    return error


def test_create_writes_the_record_and_its_ownership_txt(bind: Bind) -> None:
    bind.server().apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10", ttl=120)), OURS)

    assert bind.ask(WEB, "A") == ["192.0.2.10"]
    assert bind.ttl(WEB, "A") == 120
    assert bind.ask("_reconciler.web.lab.example.", "TXT") == [OURS]


def test_create_writes_a_cname(bind: Bind) -> None:
    blog = heritage("reconciler", "blog")
    bind.server().apply(RecordChange(RecordOp.CREATE, cname("Blog.Lab.Example", "web.lab.example.")), blog)

    assert bind.ask("blog.lab.example.", "CNAME") == ["web.lab.example."]
    assert bind.ask("_reconciler.blog.lab.example.", "TXT") == [blog]


def test_an_ownership_txt_longer_than_one_string_is_written_and_matched(bind: Bind) -> None:
    long_txt = heritage("reconciler", "r" * 300)  # a TXT string holds 255 bytes at most
    server = bind.server()
    server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), long_txt)
    server.apply(RecordChange(RecordOp.CHANGE, a(WEB, "192.0.2.11")), long_txt)

    assert bind.ask(WEB, "A") == ["192.0.2.11"]
    assert bind.ask("_reconciler.web.lab.example.", "TXT") == [long_txt]


def test_change_replaces_the_address(bind: Bind) -> None:
    server = bind.server()
    server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), OURS)
    server.apply(RecordChange(RecordOp.CHANGE, a(WEB, "192.0.2.11")), OURS)

    assert bind.ask(WEB, "A") == ["192.0.2.11"]
    assert bind.ask("_reconciler.web.lab.example.", "TXT") == [OURS]


def test_change_turns_an_a_into_a_cname_and_back(bind: Bind) -> None:
    server = bind.server()
    server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), OURS)
    server.apply(RecordChange(RecordOp.CHANGE, cname(WEB, "ns.lab.example.")), OURS)

    assert bind.ask(WEB, "A") == ["127.0.0.1"]  # followed through the CNAME
    assert bind.ask(WEB, "CNAME") == ["ns.lab.example."]

    server.apply(RecordChange(RecordOp.CHANGE, a(WEB, "192.0.2.12")), OURS)
    assert bind.ask(WEB, "CNAME") == []
    assert bind.ask(WEB, "A") == ["192.0.2.12"]


def test_delete_removes_the_record_and_its_txt(bind: Bind) -> None:
    server = bind.server()
    server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), OURS)
    server.apply(RecordChange(RecordOp.DELETE, a(WEB, "192.0.2.10")), OURS)

    assert bind.ask(WEB, "A") == []
    assert bind.ask("_reconciler.web.lab.example.", "TXT") == []


def test_a_create_or_delete_made_once_already_is_done(bind: Bind) -> None:
    # The retry after an answer was lost: the server holds what the call would make.
    server = bind.server()
    create = RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10"))
    server.apply(create, OURS)
    server.apply(create, OURS)
    assert bind.ask(WEB, "A") == ["192.0.2.10"]

    delete = RecordChange(RecordOp.DELETE, a(WEB, "192.0.2.10"))
    server.apply(delete, OURS)
    server.apply(delete, OURS)
    assert bind.ask(WEB, "A") == []


def test_a_create_of_a_name_in_use_by_another_request_is_refused(bind: Bind) -> None:
    # The same name, our TXT shape, another request: not "already done".
    server = bind.server()
    error = refused(
        bind, lambda: server.apply(RecordChange(RecordOp.CREATE, a("shared.lab.example", "192.0.2.60")), OURS)
    )

    assert error.answer == "YXDOMAIN"
    assert bind.ask("_reconciler.shared.lab.example.", "TXT") == [OTHER_TXT]


def test_a_create_never_takes_over_a_foreign_record(bind: Bind) -> None:
    taken = a("taken.lab.example.", "192.0.2.10")
    error = refused(bind, lambda: bind.server().apply(RecordChange(RecordOp.CREATE, taken), OURS))

    assert error.answer == "YXDOMAIN"
    assert not error.temporary
    assert error.reason == "taken.lab.example is already in use by records the reconciler does not own; left as it is"
    assert bind.ask("taken.lab.example.", "A") == ["192.0.2.99"]
    assert bind.ask("_reconciler.taken.lab.example.", "TXT") == []


@pytest.mark.parametrize("op", [RecordOp.CHANGE, RecordOp.DELETE])
def test_a_change_or_delete_never_touches_a_foreign_record(bind: Bind, op: RecordOp) -> None:
    error = refused(bind, lambda: bind.server().apply(RecordChange(op, a("taken.lab.example.", "192.0.2.10")), OURS))

    assert error.answer == "NXRRSET"
    assert not error.temporary
    assert error.reason == (
        "the ownership record _reconciler.taken.lab.example does not name request web; "
        "taken.lab.example is left as it is"
    )
    assert bind.ask("taken.lab.example.", "A") == ["192.0.2.99"]


@pytest.mark.parametrize("op", [RecordOp.CHANGE, RecordOp.DELETE])
def test_a_record_of_another_request_is_left_alone(bind: Bind, op: RecordOp) -> None:
    error = refused(bind, lambda: bind.server().apply(RecordChange(op, a("shared.lab.example.", "192.0.2.10")), OURS))

    assert error.answer == "NXRRSET"
    assert "does not name request web" in error.reason
    assert bind.ask("shared.lab.example.", "A") == ["192.0.2.60"]
    assert bind.ask("_reconciler.shared.lab.example.", "TXT") == [OTHER_TXT]


AUTHENTICATION = "the server refused the TSIG key"


@pytest.mark.parametrize(
    ("what", "key_name", "algorithm", "answer"),
    [
        ("another secret", "reconciler", "hmac-sha256", "BADSIG"),
        ("an unknown key name", "stranger", "hmac-sha256", "BADKEY"),
        ("another algorithm", "reconciler", "hmac-sha512", "BADKEY"),
    ],
)
def test_a_key_the_server_does_not_take_is_an_authentication_failure(
    bind: Bind, what: str, key_name: str, algorithm: str, answer: str
) -> None:
    secret = base64.b64encode(secrets.token_bytes(32)).decode() if what == "another secret" else bind.secret
    server = DnsServer("127.0.0.1", bind.port, key_name, algorithm, Secret(secret))
    error = refused(bind, lambda: server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), OURS))

    assert error.reason.startswith(f"{AUTHENTICATION} {key_name} (answer {answer}): check dns.rfc2136.key_name")
    assert "$RECONCILER_TSIG_SECRET" in error.reason
    assert error.answer == answer
    assert not error.temporary
    assert secret not in str(error)
    assert bind.ask(WEB, "A") == []


def test_a_zone_that_refuses_the_key_is_an_authentication_failure(bind: Bind) -> None:
    # BIND answers REFUSED, signed, to an update its allow-update does not let the key make.
    frozen = Record("web.frozen.example.", RecordType.A, "192.0.2.10", FROZEN)
    error = refused(bind, lambda: bind.server().apply(RecordChange(RecordOp.CREATE, frozen), OURS))

    assert error.answer == "REFUSED"
    assert error.reason.startswith(f"{AUTHENTICATION} reconciler (answer REFUSED): check dns.rfc2136.key_name")
    assert error.reason.endswith("and that the server lets this key update zone frozen.example")
    assert not error.temporary
    assert bind.ask("web.frozen.example.", "A") == []


def test_a_zone_the_server_does_not_serve_is_named(bind: Bind) -> None:
    # BIND answers NOTAUTH, signed with the key (so the key itself is good), for a zone it does not serve.
    nope = Record("web.nope.example.", RecordType.A, "192.0.2.10", "nope.example.")
    error = refused(bind, lambda: bind.server().apply(RecordChange(RecordOp.CREATE, nope), OURS))

    assert error.answer == "NOTAUTH"
    assert error.reason.startswith(f"{AUTHENTICATION} reconciler (answer NOTAUTH)")
    assert error.reason.endswith("(or it is not authoritative for zone nope.example)")
    assert not error.temporary


def test_a_name_outside_the_zone_is_refused_by_the_server(bind: Bind) -> None:
    outside = Record("web.nope.example.", RecordType.A, "192.0.2.10", ZONE)
    error = refused(bind, lambda: bind.server().apply(RecordChange(RecordOp.CREATE, outside), OURS))

    assert error.answer == "NOTZONE"
    assert error.reason.startswith("the server is not authoritative for zone lab.example")
    assert not error.temporary


def test_no_server_is_a_temporary_failure(bind: Bind) -> None:
    port = free_dual_port()  # nothing listens here
    server = DnsServer("127.0.0.1", port, "reconciler", "hmac-sha256", Secret(bind.secret), timeout=1)
    error = refused(bind, lambda: server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), OURS))

    assert error.temporary
    assert error.answer is None
    assert error.reason == f"no answer from 127.0.0.1:{port} within 1 s (connection refused)"


def test_a_server_that_never_answers_is_a_temporary_failure(bind: Bind) -> None:
    with socket.socket() as silent:  # takes the connection, says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = int(silent.getsockname()[1])
        server = DnsServer("127.0.0.1", port, "reconciler", "hmac-sha256", Secret(bind.secret), timeout=1)
        began = time.monotonic()
        error = refused(bind, lambda: server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), OURS))
        assert time.monotonic() - began < 10
        transfer = refused(bind, lambda: server.transfer(ZONE))

    assert error.temporary
    assert error.reason == f"no answer from 127.0.0.1:{port} within 1 s; the update may or may not have been made"
    assert transfer.temporary
    assert transfer.reason == f"no answer from 127.0.0.1:{port} within 1 s"


def test_transfer_shows_every_record_with_its_owner(bind: Bind) -> None:
    server = bind.server()
    server.apply(RecordChange(RecordOp.CREATE, a(WEB, "192.0.2.10")), OURS)
    server.apply(RecordChange(RecordOp.CREATE, cname("blog.lab.example.", "WEB.lab.example")), OURS)

    view = server.transfer("Lab.Example")

    assert view.zone == ZONE
    assert view.at(WEB) == (("A", "192.0.2.10"),)
    assert view.record("web.lab.example", ZONE, 300) == a(WEB, "192.0.2.10")
    assert view.at("blog.lab.example") == (("CNAME", "web.lab.example."),)
    assert view.owner("web.lab.example") == Owner("reconciler", "web")
    assert view.at("_reconciler.web.lab.example") == (("TXT", OURS),)
    assert view.at("taken.lab.example") == (("A", "192.0.2.99"),)
    assert view.owner("taken.lab.example") is None
    assert view.owner("shared.lab.example") == Owner("reconciler", "other")
    assert view.owned("reconciler") == {
        "web.lab.example.": Owner("reconciler", "web"),
        "blog.lab.example.": Owner("reconciler", "web"),
        "shared.lab.example.": Owner("reconciler", "other"),
    }
    assert ("NS", "ns.lab.example.") in view.at(ZONE)
    assert all(name == name.lower() and name.endswith(".") for name in view.names)


def test_a_refused_transfer_says_how_to_do_without(bind: Bind) -> None:
    error = refused(bind, lambda: bind.server().transfer(CLOSED))

    assert error.step == "zone transfer"
    assert error.answer == "REFUSED"
    assert not error.temporary
    assert error.reason == (
        "the server refused a zone transfer of closed.example (set dns.rfc2136.axfr: false if it never allows one)"
    )


def test_a_transfer_with_another_key_is_an_authentication_failure(bind: Bind) -> None:
    other = base64.b64encode(secrets.token_bytes(32)).decode()
    error = refused(bind, lambda: bind.server(secret=other).transfer(ZONE))

    assert error.answer == "BADSIG"
    assert error.reason.startswith(f"{AUTHENTICATION} reconciler (answer BADSIG)")
    assert other not in str(error)


def test_the_secret_is_in_no_message_and_no_repr(bind: Bind) -> None:
    server = bind.server()
    assert bind.secret not in repr(server)
    assert bind.secret not in repr(vars(server))  # dnspython's own Key repr would print it
    with pytest.raises(DnsError) as caught:
        DnsServer("127.0.0.1", bind.port, "reconciler", "hmac-sha256", Secret(bind.secret + "!"))
    assert bind.secret not in str(caught.value)
    assert caught.value.reason == "$RECONCILER_TSIG_SECRET is not a base64 key (as tsig-keygen writes it)"
