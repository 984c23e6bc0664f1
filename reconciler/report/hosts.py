"""The hosts file (`dns/reconciler.hosts` by default): every ready request's address and names, for resolvers
that read hosts-format files: dnsmasq (--hostsdir, --addn-hosts), Pi-hole (its dnsmasq), AdGuard Home (a
blocklist in /etc/hosts syntax answers with the address it names) and CoreDNS's hosts plugin.

# Written by reconciler from its requests: one line per request, its address and then its names.
# Change the requests, not this file; edits here are overwritten.
# request blog (requests/blog.yaml)
192.168.50.210 blog.lab.example.com blog.example.com

The reconciler owns the whole file. Only what every consumer reads the same way is written: comments on lines
of their own (all four drop a '#' and the rest of its line, but AdGuard Home's parser has cut one character too
many before an inline one), fields split by one space and lines ended by '\n' (AdGuard Home splits on space and
tab only), one address per line, names in lower case without a trailing dot, each name once in the file (a name
on two lines would get both addresses from dnsmasq and CoreDNS), and no line with an address but no name
(AdGuard Home would read a lone address as a domain to block).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple

from reconciler.parse import one_line

MARK = b"# Written by reconciler from its requests"
HEADER = (
    "# Written by reconciler from its requests: one line per request, its address and then its names.\n"
    "# Change the requests, not this file; edits here are overwritten.\n"
)
_REQUEST = "# request {name} ({path})\n"
_REQUEST_LINE = re.compile(r"# request (\S+) \((.*)\)")
# A host name as all four consumers take it: RFC 1123 labels, at most 253 characters, the last one starting with
# a letter (so that no name reads as an address).
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z]([a-z0-9-]{0,61}[a-z0-9])?")


class Entry(NamedTuple):
    """One request's line: its name and file (for the comment), its address and the names that resolve to it."""

    request: str
    path: str
    address: str
    names: tuple[str, ...]


def render(entries: Iterable[tuple[str, str, str, tuple[str, ...]]]) -> str:
    """The hosts file's text, requests in name order; the same entries always give the same bytes.

    A name already on an earlier request's line is left off a later one (the caller keeps names apart; this
    keeps the file unambiguous if it did not). Raises ValueError for an address or name that is not one: the
    values are checked before they get here, and a space or '#' in one would change what the line says.
    """
    lines = [HEADER]
    seen: set[str] = set()
    for entry in sorted(map(Entry._make, entries), key=lambda e: e.request):
        if not re.fullmatch(r"\S+", entry.request):
            raise ValueError(f"not a request name: {entry.request!r}")
        address = ipaddress.ip_address(entry.address)
        names = []
        for raw in entry.names:
            name = _host_name(raw)
            if name is None:
                raise ValueError(f"request {entry.request}: {raw!r} is not a host name")
            if name not in seen:
                seen.add(name)
                names.append(name)
        if not names:
            continue
        lines.append(_REQUEST.format(name=one_line(entry.request), path=one_line(entry.path)))
        lines.append(f"{address} {' '.join(names)}\n")
    return "".join(lines)


def _host_name(value: str) -> str | None:
    """value as the file writes a host name (lower case, no trailing dot), or None when it is not one."""
    name = value.lower().removesuffix(".")
    # isascii: lower() maps some other characters to ASCII ones (the Kelvin sign to k).
    return name if value.isascii() and _HOSTNAME.fullmatch(name) else None


def _address(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def is_generated(text: bytes) -> bool:
    """Whether the reconciler wrote this file (a hand-written one is never overwritten)."""
    return text.startswith(MARK)


def parse(text: str | bytes) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Request -> (address, names) of a file render() wrote, so that a request not ready now keeps its line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    request: str | None = None
    for line in text.splitlines():
        found = _REQUEST_LINE.fullmatch(line)
        if found:
            request = found.group(1)
            continue
        fields = line.split("#", 1)[0].split()
        if request is not None and len(fields) >= 2 and request not in out:
            # Only what render() would write again: a line edited into something else is not kept.
            address, names = _address(fields[0]), [_host_name(f) for f in fields[1:]]
            if address is not None and None not in names:
                out[request] = (address, tuple(n for n in names if n is not None))
        if fields:
            request = None  # an entry belongs to the comment right above it only
    return out
