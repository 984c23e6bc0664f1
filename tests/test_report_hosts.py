"""The hosts file (report.hosts): one line per request, read the same by dnsmasq, Pi-hole, AdGuard Home and CoreDNS."""

from __future__ import annotations

import ipaddress

import pytest
from conftest import Dnsmasq
from hypothesis import given
from hypothesis import strategies as st

from reconciler.report import hosts
from reconciler.report.hosts import Entry

BLOG = Entry("blog", "requests/blog.yaml", "192.168.50.210", ("blog.lab.example.com", "blog.example.com."))
DB = Entry("db", "requests/db.yaml", "192.168.50.211", ("db.lab.example.com",))


ZONE = "lab.test"


def test_a_header_then_per_request_a_comment_and_one_line_in_request_order() -> None:
    assert hosts.render([DB, BLOG]) == (
        "# Written by reconciler from its requests: one line per request, its address and then its names.\n"
        "# Change the requests, not this file; edits here are overwritten.\n"
        "# request blog (requests/blog.yaml)\n"
        "192.168.50.210 blog.lab.example.com blog.example.com\n"
        "# request db (requests/db.yaml)\n"
        "192.168.50.211 db.lab.example.com\n"
    )
    assert hosts.render([]) == hosts.HEADER  # still a file every consumer reads: it holds no name


def test_a_name_is_written_once_the_first_request_keeps_it_and_one_left_without_names_is_left_out() -> None:
    text = hosts.render(
        [
            Entry("b", "requests/b.yaml", "192.0.2.2", ("shared.example.com", "B.Example.com")),
            Entry("a", "requests/a.yaml", "192.0.2.1", ("shared.example.com.",)),
            Entry("c", "requests/c.yaml", "192.0.2.3", ("b.example.com",)),
        ]
    )
    assert hosts.parse(text) == {
        "a": ("192.0.2.1", ("shared.example.com",)),
        "b": ("192.0.2.2", ("b.example.com",)),
    }
    assert "request c" not in text


def test_an_address_is_written_in_its_usual_form_and_ipv6_works_too() -> None:
    text = hosts.render([Entry("v6", "requests/v6.yaml", "2001:DB8:0:0::10", ("v6.example.com",))])
    assert text.endswith("# request v6 (requests/v6.yaml)\n2001:db8::10 v6.example.com\n")


@pytest.mark.parametrize(
    "names",
    [
        ("two words.example.com",),
        ("x#y.example.com",),
        ("line\nbreak.example.com",),
        ("",),
        (".",),
        ("192.0.2.9",),  # a name that reads as an address
        ("\u212a.example.com",),  # the Kelvin sign, which lower() makes a k
        ("-lead.example.com",),
        ("a" * 64 + ".example.com",),
        ("under_score.example.com",),
    ],
)
def test_a_value_that_is_no_host_name_is_refused_not_written(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        hosts.render([Entry("x", "requests/x.yaml", "192.0.2.9", names)])


@pytest.mark.parametrize("address", ["192.0.2.300", "192.0.2.9 evil.example.com", "", "web"])
def test_a_value_that_is_no_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        hosts.render([Entry("x", "requests/x.yaml", address, ("x.example.com",))])


def test_a_line_break_in_the_path_stays_in_the_comment() -> None:
    text = hosts.render([Entry("x", "requests/x\n10.0.0.1 evil.example.com\r.yaml", "192.0.2.9", ("x.example.com",))])
    assert len(text.splitlines()) == 4
    assert hosts.parse(text) == {"x": ("192.0.2.9", ("x.example.com",))}


def test_the_reconcilers_file_is_known_by_its_header() -> None:
    assert hosts.is_generated(hosts.render([BLOG]).encode())
    assert not hosts.is_generated(b"192.0.2.1 x.example.com\n")
    assert not hosts.is_generated(b"# Written by hand\n")


def test_parse_keeps_only_lines_the_reconciler_would_write_again() -> None:
    text = hosts.render([BLOG, DB]) + (
        "# request edited (requests/edited.yaml)\n"
        "not-an-address edited.example.com\n"
        "# request orphan (requests/orphan.yaml)\n"
        "\n"
        "# request dangling (requests/dangling.yaml)\n"
        "192.0.2.50 bad_name.example.com\n"
        "192.0.2.51 stray.example.com\n"
    )
    assert hosts.parse(text) == {
        "blog": ("192.168.50.210", ("blog.lab.example.com", "blog.example.com")),
        "db": ("192.168.50.211", ("db.lab.example.com",)),
    }


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
NAME = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(LABEL, max_size=3),
    st.sampled_from(["lan", "example", "test"]),
)
ADDRESS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
PATH = st.text(st.characters(exclude_categories=()), max_size=30)  # line breaks and surrogates too
ENTRY = st.builds(Entry, LABEL, PATH, ADDRESS, st.lists(NAME, max_size=4).map(tuple))


@given(st.lists(ENTRY, max_size=8, unique_by=lambda e: e.request))
def test_any_entries_give_a_comment_and_an_entry_line_per_request_each_name_once_and_read_back(
    entries: list[Entry],
) -> None:
    text = hosts.render(entries)
    assert hosts.is_generated(text.encode("utf-8")) and text.endswith("\n") and "\r" not in text
    lines = text.splitlines()[2:]
    assert all(line.startswith("# request ") for line in lines[0::2])
    assert not any("#" in line for line in lines[1::2])
    written = [line.split(" ") for line in lines[1::2]]
    names = [n for _, *line_names in written for n in line_names]
    assert len(names) == len(set(names)) and all(line_names for _, *line_names in written)
    expected: dict[str, tuple[str, tuple[str, ...]]] = {}
    seen: set[str] = set()
    for entry in sorted(entries, key=lambda e: e.request):
        kept = tuple(dict.fromkeys(n for n in entry.names if n not in seen))
        seen.update(kept)
        if kept:
            expected[entry.request] = (str(ipaddress.ip_address(entry.address)), kept)
    assert hosts.parse(text) == expected


def test_dnsmasq_answers_from_the_file_and_forgets_a_request_once_it_is_rewritten_without_it(dnsmasq: Dnsmasq) -> None:
    path = dnsmasq.hostsdir / "reconciler.hosts"
    web = Entry("web", "requests/web.yaml", "192.0.2.10", (f"web.{ZONE}.", f"www.{ZONE}"))
    db = Entry("db", "requests/db path (old).yaml", "2001:db8::11", (f"db.{ZONE}",))
    path.write_text(hosts.render([web, db]))
    dnsmasq.wait_for(lambda: dnsmasq.ask(f"web.{ZONE}") == ("NOERROR", ["192.0.2.10"]), "web to resolve")
    assert dnsmasq.ask(f"www.{ZONE}") == ("NOERROR", ["192.0.2.10"])
    assert dnsmasq.ask(f"db.{ZONE}", "AAAA") == ("NOERROR", ["2001:db8::11"])
    assert dnsmasq.ask(f"request.{ZONE}")[0] == "NXDOMAIN"  # the comments hold no name

    path.write_text(hosts.render([db]))
    dnsmasq.wait_for(lambda: dnsmasq.ask(f"web.{ZONE}")[0] == "NXDOMAIN", "web to be gone")
    assert dnsmasq.ask(f"www.{ZONE}")[0] == "NXDOMAIN"
    assert dnsmasq.ask(f"db.{ZONE}", "AAAA") == ("NOERROR", ["2001:db8::11"])
    log = dnsmasq.log.read_text()
    assert "bad address" not in log and "bad name" not in log, log
