"""The only module that talks to the DNS server: RFC 2136 updates and zone transfers, signed with TSIG (dnspython).

Every exchange goes over TCP: a zone transfer needs it anyway, an answer is never truncated, and a server that is
down refuses the connection at once instead of leaving a UDP query to time out.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.nsbase
import dns.rdtypes.txtbase
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from reconciler.config import TSIG_SECRET_ENV
from reconciler.model.dns import Record, RecordChange, ZoneView, absolute, parse_heritage, registry_name
from reconciler.model.errors import ReconcilerError
from reconciler.model.secret import MASK, Secret
from reconciler.model.vocab import RecordOp, RecordType

# The algorithms dns.rfc2136.key_algorithm may name, in dnspython's (and BIND's) spelling.
ALGORITHMS = ("hmac-sha256", "hmac-sha512", "hmac-sha384", "hmac-sha224", "hmac-sha1", "hmac-md5")

# Answers that mean the server would not take our key for this zone. BIND and PowerDNS say REFUSED to an update
# that is unsigned, badly signed or not allowed for the key; Knot says NOTAUTH.
_REFUSALS = (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.BADSIG, dns.rcode.BADKEY, dns.rcode.BADTIME)
# The TSIG error a server put in its (unsigned) answer, which dnspython raises instead of returning the answer.
_PEER_ERRORS: tuple[tuple[type[dns.tsig.PeerError], str], ...] = (
    (dns.tsig.PeerBadKey, "BADKEY"),
    (dns.tsig.PeerBadSignature, "BADSIG"),
    (dns.tsig.PeerBadTime, "BADTIME"),
    (dns.tsig.PeerBadTruncation, "BADTRUNC"),
)
# dnspython's own checks of the answer's signature: the answer came from a server that does not share the key.
_UNVERIFIED = (
    dns.tsig.BadSignature,
    dns.tsig.BadKey,
    dns.tsig.BadAlgorithm,
    dns.tsig.BadTime,
    dns.message.UnknownTSIGKey,
    dns.exception.FormError,  # "response requires a TSIG but does not have one", BadTSIG
)


class DnsError(ReconcilerError):
    """An update or a transfer failed; answer is the server's rcode name when it answered (e.g. "YXDOMAIN")."""

    def __init__(self, step: str, reason: str, answer: str | None = None, temporary: bool = False) -> None:
        self.step = step
        self.reason = reason
        self.answer = answer
        self.temporary = temporary
        super().__init__(f"{step}: {reason}")


class _Key(dns.tsig.Key):
    """dnspython's key, whose repr would print the secret in base64 (a log line, a traceback's locals)."""

    def __repr__(self) -> str:
        return f"<TSIG key {self.name} {self.algorithm} secret={MASK}>"


def _show(name: str) -> str:
    """A name as an operator writes it: no trailing dot."""
    return absolute(name).rstrip(".")


def _txt(text: str) -> dns.rdata.Rdata:
    """A TXT holding `text`, cut into the 255-byte strings a TXT is made of (always cut the same way)."""
    raw = text.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


def _rdata(step: str, record: Record) -> dns.rdata.Rdata:
    """The record's data on the wire: an address, or the CNAME's target as an absolute name."""
    value = record.value if record.type == RecordType.A else absolute(record.value)
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, record.type.value, value)
    except dns.exception.DNSException:
        raise DnsError(step, f"{value!r} is not {record.type} data") from None


def _presentation(rdata: dns.rdata.Rdata) -> str:
    """A record's data as ZoneView holds it: an address, an absolute lower-case name, a TXT's joined text."""
    if isinstance(rdata, dns.rdtypes.nsbase.NSBase):  # CNAME, NS, PTR, DNAME
        return rdata.target.to_text().lower()
    if isinstance(rdata, dns.rdtypes.txtbase.TXTBase):
        return b"".join(rdata.strings).decode("utf-8", "backslashreplace")
    return rdata.to_text()  # an A's address, and every other type in its zone-file form


class DnsServer:
    """One authoritative server that takes signed dynamic updates (RFC 2136) and, maybe, signed transfers."""

    def __init__(
        self,
        host: str,
        port: int,
        key_name: str,
        algorithm: str,
        secret: Secret,
        timeout: float = 5.0,
        secret_env: str = TSIG_SECRET_ENV,
    ) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout
        self._key_name = _show(key_name)
        self._secret_env = secret_env
        if algorithm not in ALGORITHMS:
            raise DnsError("TSIG key", f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
        try:
            # Strict: a stray character would otherwise be dropped and the key silently be another one.
            raw = base64.b64decode(secret.reveal(), validate=True)
        except (binascii.Error, ValueError):
            raise DnsError("TSIG key", f"${secret_env} is not a base64 key (as tsig-keygen writes it)") from None
        if not raw:
            raise DnsError("TSIG key", f"${secret_env} is empty")
        self._key = _Key(dns.name.from_text(key_name), raw, algorithm)

    def __repr__(self) -> str:
        return f"DnsServer({self._at()}, key {self._key_name})"

    def apply(self, change: RecordChange, owner_txt: str) -> None:
        """One atomic, signed update of one record name and its ownership TXT, refused by the server itself
        (through the update's prerequisites) when the name is not the reconciler's to touch."""
        record = change.record
        step = f"{change.op} {record.type} record"
        response = self._send(step, self._update(change, owner_txt), changing=True)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        name, zone, answer = _show(record.name), _show(record.zone), dns.rcode.to_text(rcode)
        if rcode == dns.rcode.YXDOMAIN and change.op == RecordOp.CREATE:
            if self._holds(self._created(record, owner_txt)):
                return  # a retry of a create that was made (its answer was lost): done
            reason = f"{name} is already in use by records the reconciler does not own; left as it is"
            raise DnsError(step, reason, answer)
        if rcode == dns.rcode.NXRRSET and change.op in (RecordOp.CHANGE, RecordOp.DELETE):
            if change.op == RecordOp.DELETE and self._holds(self._deleted(record)):
                return  # a retry of a delete that was made: done
            found = parse_heritage(owner_txt)
            request = found.request if found is not None else owner_txt
            reason = (
                f"the ownership record {_show(registry_name(record.name))} does not name request {request}; "
                f"{name} is left as it is"
            )
            raise DnsError(step, reason, answer)
        if rcode in _REFUSALS:
            raise self._refused(step, f"answer {answer}", answer, zone)
        if rcode == dns.rcode.NOTZONE:
            raise DnsError(step, f"the server is not authoritative for zone {zone} ({name} is outside it)", answer)
        if rcode == dns.rcode.SERVFAIL:
            reason = f"the server failed to apply the update (answer {answer}); tried again later"
            raise DnsError(step, reason, answer, temporary=True)
        if rcode == dns.rcode.NOTIMP:
            raise DnsError(step, f"the server does not take dynamic updates (answer {answer})", answer)
        raise DnsError(step, f"the server answered {answer} to the update of {name}", answer)

    def transfer(self, zone: str) -> ZoneView:
        """Every record of the zone, by a signed AXFR: others' records and the ownership TXTs too."""
        step = "zone transfer"
        shown = _show(zone)
        received = dns.zone.Zone(absolute(zone), relativize=False)
        query, _ = dns.xfr.make_query(received, serial=None, keyring=self._key)
        where = self._address(step)
        try:
            dns.query.inbound_xfr(
                where, received, query, port=self._port, timeout=self._timeout, lifetime=self._timeout
            )
        except dns.xfr.TransferError as exc:
            answer = dns.rcode.to_text(exc.rcode)
            if exc.rcode == dns.rcode.REFUSED:
                reason = (
                    f"the server refused a zone transfer of {shown} "
                    "(set dns.rfc2136.axfr: false if it never allows one)"
                )
                raise DnsError(step, reason, answer) from None
            if exc.rcode == dns.rcode.NOTAUTH:
                # The answer was signed with our key (dnspython checked), so the key itself is not in question.
                reason = (
                    f"the server is not authoritative for zone {shown}, or does not allow this key a transfer of it "
                    f"(answer {answer}; set dns.rfc2136.axfr: false if it never allows one)"
                )
                raise DnsError(step, reason, answer) from None
            temporary = exc.rcode == dns.rcode.SERVFAIL  # e.g. the zone is not loaded yet
            raise DnsError(step, f"the server answered {answer} to a transfer of {shown}", answer, temporary) from None
        except Exception as exc:  # translated, or raised again when it is not the server's doing
            raise self._failure(step, exc, shown, changing=False) from None
        names: dict[str, tuple[tuple[str, str], ...]] = {}
        for name, node in received.nodes.items():
            rows = [(dns.rdatatype.to_text(rds.rdtype), _presentation(rd)) for rds in node for rd in rds]
            names[name.to_text().lower()] = tuple(sorted(rows))
        return ZoneView(absolute(zone), names)

    # --- the messages

    def _message(self, zone: str) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(absolute(zone), keyring=self._key)

    def _update(self, change: RecordChange, owner_txt: str) -> dns.update.UpdateMessage:
        """The update for a change; present() and absent() give prerequisites the TTL 0 RFC 2136 requires."""
        record = change.record
        step = f"{change.op} {record.type} record"
        name, registry = absolute(record.name), registry_name(record.name)
        update = self._message(record.zone)
        if change.op == RecordOp.CREATE:
            update.absent(name)  # name not in use: no data of any type, ours or anyone's
            update.absent(registry)
            update.add(name, record.ttl, _rdata(step, record))
            update.add(registry, record.ttl, _txt(owner_txt))
            return update
        update.present(registry, _txt(owner_txt))  # RRset exists, value dependent: exactly our TXT
        # A CNAME may have no other data beside it: clear both types, whichever the record is now.
        update.delete(name, dns.rdatatype.A)
        update.delete(name, dns.rdatatype.CNAME)
        if change.op == RecordOp.CHANGE:
            update.add(name, record.ttl, _rdata(step, record))
        else:
            update.delete(registry, dns.rdatatype.TXT)
        return update

    def _created(self, record: Record, owner_txt: str) -> dns.update.UpdateMessage:
        """An update of prerequisites only: the record and our TXT are there exactly as a create makes them."""
        check = self._message(record.zone)
        check.present(registry_name(record.name), _txt(owner_txt))
        check.present(absolute(record.name), _rdata("check", record))
        return check

    def _deleted(self, record: Record) -> dns.update.UpdateMessage:
        """An update of prerequisites only: no A, no CNAME and no ownership TXT are left at the record's names."""
        check = self._message(record.zone)
        check.absent(registry_name(record.name))
        check.absent(absolute(record.name), dns.rdatatype.A)
        check.absent(absolute(record.name), dns.rdatatype.CNAME)
        return check

    def _holds(self, check: dns.update.UpdateMessage) -> bool:
        """Whether the server says a prerequisites-only update holds; any failure is a no (the first error stands)."""
        try:
            return self._send("check", check, changing=False).rcode() == dns.rcode.NOERROR
        except DnsError:
            return False

    # --- the wire

    def _at(self) -> str:
        return f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"

    def _address(self, step: str) -> str:
        """The server's address: dnspython takes addresses only, so a name is looked up on every call."""
        try:
            ipaddress.ip_address(self._host)
            return self._host
        except ValueError:
            pass
        try:
            found = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except OSError as exc:
            reason = f"cannot look up the DNS server {self._host} ({exc.strerror or type(exc).__name__})"
            raise DnsError(step, reason, temporary=True) from None
        return str(found[0][4][0])

    def _send(self, step: str, message: dns.message.Message, changing: bool) -> dns.message.Message:
        where = self._address(step)
        zone = _show(message.question[0].name.to_text()) if message.question else "?"
        try:
            return dns.query.tcp(message, where, timeout=self._timeout, port=self._port)
        except Exception as exc:  # translated, or raised again when it is not the server's doing
            raise self._failure(step, exc, zone, changing) from None

    def _failure(self, step: str, exc: Exception, zone: str, changing: bool) -> DnsError:
        """The DnsError for what dnspython or the socket raised; the exception's own text is never passed on."""
        # An update sent and then unanswered may have been applied: the caller reads the zone before it retries.
        unsure = "; the update may or may not have been made" if changing else ""
        no_answer = f"no answer from {self._at()} within {self._timeout:g} s"
        if isinstance(exc, dns.exception.Timeout):
            return DnsError(step, no_answer + unsure, temporary=True)
        if isinstance(exc, ConnectionRefusedError):
            return DnsError(step, f"{no_answer} (connection refused)", temporary=True)
        if isinstance(exc, EOFError):
            return DnsError(step, f"{no_answer} (the server closed the connection){unsure}", temporary=True)
        if isinstance(exc, OSError):
            why = exc.strerror or type(exc).__name__
            return DnsError(step, f"{no_answer} ({why}){unsure}", temporary=True)
        for peer, answer in _PEER_ERRORS:
            if isinstance(exc, peer):
                return self._refused(step, f"answer {answer}", answer, zone)
        if isinstance(exc, dns.tsig.PeerError):
            return self._refused(step, "the server named a TSIG error", None, zone)
        if isinstance(exc, _UNVERIFIED):
            return self._refused(step, "its answer was not signed with the key", None, zone)
        if isinstance(exc, dns.exception.DNSException):
            reason = f"the answer from {self._at()} could not be read ({type(exc).__name__}){unsure}"
            return DnsError(step, reason, temporary=True)
        raise exc  # a bug of ours, not the server's: said as one by the caller

    def _refused(self, step: str, detail: str, answer: str | None, zone: str) -> DnsError:
        """The one authentication failure, whichever way the server or dnspython put it."""
        verb = "transfer" if step == "zone transfer" else "update"
        reason = (
            f"the server refused the TSIG key {self._key_name} ({detail}): check dns.rfc2136.key_name, key_algorithm "
            f"and ${self._secret_env}, and that the server lets this key {verb} zone {zone}"
        )
        if answer == "NOTAUTH":  # BIND's answer to an update of a zone it does not serve, signed and all
            reason += f" (or it is not authoritative for zone {zone})"
        elif answer == "BADTIME":
            reason += " (the clocks of this host and the server differ by more than the key allows)"
        return DnsError(step, reason, answer)
