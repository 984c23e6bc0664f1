"""The DNS records rule (plan.dns) is pure: plain unit tests over desired and observed state, and a property."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from test_plan import RANGE, desired, guest, held

from reconciler.config import DnsConfig
from reconciler.model.action import ChangeRecords
from reconciler.model.desired import Desired, Lifecycle, Service
from reconciler.model.dns import Record, RecordChange, ZoneView, heritage
from reconciler.model.observed import Held, Observed
from reconciler.model.retry import RetryPolicy
from reconciler.model.vocab import DnsState, GuestState, JobType, Phase, RecordOp, RecordType, ResourceKind
from reconciler.plan import Plan, plan

DNS = DnsConfig(zone="lab.example", ttl=300)
ZONE = "lab.example."


def web(address: str = "192.168.1.20/24", domain: str | None = "www.lab.example", **more: object) -> Desired:
    d = desired("web", address)
    return replace(d, service=Service(domain=domain), **more)  # type: ignore[arg-type]


def a(name: str, address: str, ttl: int = 300) -> Record:
    return Record(f"{name}.lab.example.", RecordType.A, address, ZONE, ttl)


def cname(name: str, target: str) -> Record:
    return Record(f"{name}.lab.example.", RecordType.CNAME, f"{target}.lab.example.", ZONE, 300)


def record_held(request: str, record: Record) -> Held:
    return Held(request, ResourceKind.DNS, record.name, "", held(request, 0).state, record.held(), 1)


def cluster(*records: tuple[str, Record], zones: dict[str, ZoneView] | None = None, **more: object) -> Observed:
    """One running container 200 of request web, and the DNS records the inventory holds."""
    inventory: dict[str, tuple[Held, ...]] = {"web": (held("web", 200),)}
    for request, record in records:
        inventory[request] = (*inventory.get(request, ()), record_held(request, record))
    return Observed((guest(200, "web"),), held=inventory, zones=zones or {}, **more)  # type: ignore[arg-type]


def run(valid: list[Desired], observed: Observed, names: list[str] | None = None, **more: object) -> Plan:
    request_names = names if names is not None else [d.name for d in valid]
    return plan(valid, [], observed, RANGE, request_names=request_names, dns=DNS, dns_writes=True, **more)  # type: ignore[arg-type]


def changes(result: Plan) -> list[RecordChange]:
    return [c for action in result.actions if isinstance(action, ChangeRecords) for c in action.changes]


def test_a_ready_request_gets_an_a_record_for_its_hostname_and_a_cname_for_its_domain() -> None:
    result = run([web()], cluster())
    assert changes(result) == [
        RecordChange(RecordOp.CREATE, a("web", "192.168.1.20")),
        RecordChange(RecordOp.CREATE, cname("www", "web")),
    ]
    standing = result.standings["web"]
    assert standing.phase == Phase.READY
    assert standing.dns is not None and standing.dns.state == DnsState.PENDING
    assert standing.dns.records == ("web.lab.example A 192.168.1.20", "www.lab.example CNAME web.lab.example")


def test_domain_records_a_gives_the_domain_its_own_a_record() -> None:
    result = plan([web()], [], cluster(), RANGE, dns=DNS.model_copy(update={"domain_records": "a"}), dns_writes=True)
    assert RecordChange(RecordOp.CREATE, a("www", "192.168.1.20")) in changes(result)


def test_records_in_place_start_nothing_and_stand_ready() -> None:
    result = run([web()], cluster(("web", a("web", "192.168.1.20")), ("web", cname("www", "web"))))
    assert result.actions == []
    assert result.standings["web"].dns is not None
    assert result.standings["web"].dns.state == DnsState.READY


def test_a_moved_address_changes_the_a_record_and_the_ttl_follows_the_config() -> None:
    result = run([web(domain=None)], cluster(("web", a("web", "192.168.1.99", ttl=60))))
    assert changes(result) == [RecordChange(RecordOp.CHANGE, a("web", "192.168.1.20"))]


def test_a_dhcp_lease_read_again_is_the_address_records_follow() -> None:
    d = replace(desired("web"), service=None)  # DHCP
    observed = Observed(
        (guest(200, "web"),),
        held={"web": (held("web", 200, "192.168.1.30"), record_held("web", a("web", "192.168.1.30")))},
        addresses={200: "192.168.1.31"},
    )
    result = run([d], observed)
    assert result.standings["web"].address == "192.168.1.31"
    assert changes(result) == [RecordChange(RecordOp.CHANGE, a("web", "192.168.1.31"))]


def test_dns_false_and_a_dropped_domain_delete_what_the_request_has() -> None:
    records = (("web", a("web", "192.168.1.20")), ("web", cname("www", "web")))
    dropped = run([web(domain=None)], cluster(*records))
    assert changes(dropped) == [RecordChange(RecordOp.DELETE, cname("www", "web"))]
    opted_out = run([web(dns=False)], cluster(*records))
    assert {c.op for c in changes(opted_out)} == {RecordOp.DELETE}
    assert len(changes(opted_out)) == 2


def test_state_absent_deletes_the_records_once_the_container_is_gone() -> None:
    gone = replace(web(), life=Lifecycle(state=GuestState.ABSENT))
    observed = Observed((), held={"web": (record_held("web", a("web", "192.168.1.20")),)})
    result = run([gone], observed)
    assert result.standings["web"].phase == Phase.DELETED
    assert changes(result) == [RecordChange(RecordOp.DELETE, a("web", "192.168.1.20"))]


def test_the_records_of_a_removed_request_go_and_an_invalid_ones_stay() -> None:
    observed = cluster(("old", a("old", "192.168.1.40")), ("typo", a("typo", "192.168.1.41")))
    result = run([web(domain=None)], observed, names=["web", "typo"])
    deleted = [c for c in changes(result) if c.op == RecordOp.DELETE]
    assert deleted == [RecordChange(RecordOp.DELETE, a("old", "192.168.1.40"))]


def test_a_request_not_ready_keeps_its_records_as_they_are() -> None:
    observed = cluster(("web", a("web", "192.168.1.99")), settling=frozenset())
    stopped_guest = replace(observed, guests=(guest(200, "web", status="stopped"),))
    result = run([web(domain=None)], stopped_guest)  # start: true, so it is started first
    assert not changes(result)
    assert result.standings["web"].phase == Phase.PROVISIONING
    assert result.standings["web"].dns is not None
    assert result.standings["web"].dns.records == ("web.lab.example A 192.168.1.99",)


def test_a_name_someone_else_holds_is_never_written_and_the_status_says_so() -> None:
    view = ZoneView(ZONE, {"www.lab.example.": (("A", "192.0.2.99"),)})
    result = run([web()], cluster(zones={ZONE: view}))
    assert changes(result) == [RecordChange(RecordOp.CREATE, a("web", "192.168.1.20"))]
    standing = result.standings["web"]
    assert standing.phase == Phase.READY  # the container is fine: only its records failed
    assert standing.dns is not None and standing.dns.state == DnsState.FAILED
    assert "www.lab.example holds records the reconciler does not own (A 192.0.2.99)" in standing.dns.message
    assert standing.message.endswith("; DNS records failed")


def test_a_transfer_shows_records_the_inventory_lost() -> None:
    txt = heritage("reconciler", "web")
    view = ZoneView(
        ZONE, {"web.lab.example.": (("A", "192.168.1.20"),), "_reconciler.web.lab.example.": (("TXT", txt),)}
    )
    result = run([web(domain=None)], cluster(zones={ZONE: view}))
    assert result.actions == []
    # Another owner id's records are someone else's.
    other = ZoneView(ZONE, {**view.names, "_reconciler.web.lab.example.": (("TXT", heritage("other", "web")),)})
    refused = run([web(domain=None)], cluster(zones={ZONE: other}))
    assert refused.actions == []
    assert refused.standings["web"].dns is not None and refused.standings["web"].dns.state == DnsState.FAILED


def test_a_transfer_finds_orphans_of_this_owner_only() -> None:
    names = {
        "gone.lab.example.": (("A", "192.168.1.50"),),
        "_reconciler.gone.lab.example.": (("TXT", heritage("reconciler", "gone")),),
        "theirs.lab.example.": (("A", "192.168.1.51"),),
        "_reconciler.theirs.lab.example.": (("TXT", heritage("other-site", "theirs")),),
    }
    result = run([], Observed((), zones={ZONE: ZoneView(ZONE, names)}), names=[])
    assert changes(result) == [RecordChange(RecordOp.DELETE, a("gone", "192.168.1.50"))]


def test_two_requests_never_race_for_one_name() -> None:
    other = replace(desired("api", "192.168.1.21/24"), service=Service(domain="web.lab.example"))
    inventory = {"web": (held("web", 200),), "api": (held("api", 201),)}
    observed = Observed((guest(200, "web"), guest(201, "api")), held=inventory)
    # Neither has the name yet: the first in order takes it, and the other is told who has it.
    result = run([web(domain=None), other], observed)
    created = [c.record.name for c in changes(result)]
    assert created.count("web.lab.example.") == 1
    refused = result.standings["web"].dns
    assert refused is not None and refused.state == DnsState.FAILED
    assert "web.lab.example belongs to request api" in refused.message
    # The request that has it keeps it.
    kept = {**inventory, "web": (held("web", 200), record_held("web", a("web", "192.168.1.20")))}
    result = run([web(domain=None), other], replace(observed, held=kept))
    assert "web.lab.example." not in [c.record.name for c in changes(result)]
    api = result.standings["api"].dns
    assert api is not None and "web.lab.example belongs to request web" in api.message


def test_a_failed_update_waits_out_its_backoff_and_shows_the_servers_answer() -> None:
    first = run([web(domain=None)], cluster())
    (action,) = first.actions
    assert isinstance(action, ChangeRecords)
    failed = action.standing(job=7, failure="dns update failed: the server refused the TSIG key reconciler")
    attempt = RetryPolicy(30, 3600).next(None, JobType.DNS, "r1", failed, True, now=100.0)
    held_back = run([web(domain=None)], cluster(attempts={"web": attempt}), now=110.0)
    assert held_back.actions == []
    dns = held_back.standings["web"].dns
    assert dns is not None and dns.state == DnsState.FAILED and "refused the TSIG key" in dns.message
    assert held_back.standings["web"].phase == Phase.READY
    assert run([web(domain=None)], cluster(attempts={"web": attempt}), now=131.0).actions  # tried again


def test_a_domain_outside_the_zones_gets_no_record_and_a_note() -> None:
    result = run([web(domain="blog.example.com")], cluster())
    assert [c.record.name for c in changes(result)] == ["web.lab.example."]
    assert result.standings["web"].dns is not None
    assert "blog.example.com lies outside the DNS zones (lab.example)" in result.standings["web"].dns.message


def test_without_an_update_protocol_plan_still_says_which_names_a_request_has() -> None:
    result = plan([web()], [], cluster(), RANGE, dns=DNS, dns_writes=False)
    assert result.actions == []
    assert result.records["web"] == (a("web", "192.168.1.20"), cname("www", "web"))
    assert result.standings["web"].dns is None


@settings(max_examples=150, deadline=None)
@given(
    foreign=st.sets(st.sampled_from(["web", "www", "api"])),
    inventory=st.sets(st.sampled_from(["web", "www", "old"])),
)
def test_no_update_ever_touches_a_name_a_transfer_shows_as_someone_elses(
    foreign: set[str], inventory: set[str]
) -> None:
    names: dict[str, tuple[tuple[str, str], ...]] = {f"{n}.lab.example.": (("A", "192.0.2.1"),) for n in foreign}
    view = ZoneView(ZONE, names)
    records = [("web" if n != "old" else "old", a(n, "192.168.1.9")) for n in inventory]
    result = run([web()], cluster(*records, zones={ZONE: view}), names=["web"])
    touched = {c.record.name for c in changes(result)}
    assert not touched & set(names)
