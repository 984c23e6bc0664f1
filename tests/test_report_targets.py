"""Prometheus target files (report.targets): file_sd JSON a real Prometheus discovers, marked as the reconciler's."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import Prometheus, free_port
from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired.request import LABEL_NAME, label_problem
from reconciler.report import targets
from reconciler.report.targets import Target

BLOG = Target(
    request="blog",
    address="192.168.50.201",
    exporters=(("node", 9100), ("nginx", 9113)),
    vmid=201,
    node="pve1",
    name="blog",
    tags=("reconciler", "web"),
    labels={"team": "web", "tier": "front"},
)


def pve_labels(target: Target, exporter: str) -> dict[str, str]:
    """The labels the reconciler sets itself on one exporter's group."""
    return {
        "pve_id": f"lxc/{target.vmid}",
        "pve_node": target.node,
        "pve_vmid": str(target.vmid),
        "pve_type": "lxc",
        "pve_name": target.name,
        "pve_tags": ";".join(target.tags),
        "managed_by": "reconciler",
        "exporter": exporter,
        "request": target.request,
    }


def test_one_group_per_exporter_with_the_guest_labels_of_pve_guest_info_and_the_requests_own() -> None:
    groups = json.loads(targets.render(BLOG))
    assert groups == [
        {"targets": ["192.168.50.201:9100"], "labels": {**pve_labels(BLOG, "node"), "team": "web", "tier": "front"}},
        {"targets": ["192.168.50.201:9113"], "labels": {**pve_labels(BLOG, "nginx"), "team": "web", "tier": "front"}},
    ]
    assert groups[0]["labels"]["pve_tags"] == "reconciler;web"  # as pve_guest_info{tags="reconciler;web"}


def test_the_text_is_sorted_indented_and_ends_with_a_newline_so_an_unchanged_target_writes_the_same_bytes() -> None:
    text = targets.render(BLOG)
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    same = Target(**{**BLOG.__dict__, "labels": {"tier": "front", "team": "web"}})  # another dict, other order
    assert same == BLOG and hash(same) == hash(BLOG)
    assert targets.render(same) == text


def test_a_cached_render_does_not_follow_a_change_to_the_callers_dict() -> None:
    labels = {"team": "web"}
    target = Target("t", "192.0.2.1", (("node", 9100),), 300, "pve1", "t", labels=labels)
    first = targets.render(target)
    labels["team"] = "ops"
    assert targets.render(target) == first and '"team": "web"' in first


def test_the_requests_labels_never_override_the_reconcilers_nor_set_prometheus_own() -> None:
    target = Target(
        "db",
        "192.0.2.7",
        (("node", 9100),),
        207,
        "pve2",
        "db",
        labels={"request": "other", "managed_by": "me", "__scheme__": "https", "__metrics_path__": "/x", "a-b": "1"},
    )
    (group,) = json.loads(targets.render(target))
    assert group["labels"] == pve_labels(target, "node")


def test_no_tags_give_an_empty_pve_tags_as_pve_guest_info_gives() -> None:
    target = Target("db", "192.0.2.7", (("node", 9100),), 207, "pve2", "db")
    (group,) = json.loads(targets.render(target))
    assert group["labels"]["pve_tags"] == ""


@pytest.mark.parametrize(
    ("address", "exporters"),
    [
        ("192.0.2.7:80", (("node", 9100),)),
        ("db.example", (("node", 9100),)),
        ("192.0.2.7", ()),
        ("192.0.2.7", (("node", 0),)),
    ],
)
def test_a_target_that_cannot_be_scraped_is_refused_not_written(
    address: str, exporters: tuple[tuple[str, int], ...]
) -> None:
    with pytest.raises(ValueError):
        targets.render(Target("db", address, exporters, 207, "pve2", "db"))


def test_the_marker_is_the_managed_by_label_on_every_group() -> None:
    text = targets.render(BLOG).encode()
    assert targets.is_generated(text) and targets.owner(text) == "blog"
    groups = json.loads(text)
    hand = [{"targets": ["192.0.2.9:9100"], "labels": {"team": "ops"}}]
    mixed = [*groups, *hand]
    two_owners = [groups[0], {**groups[1], "labels": {**groups[1]["labels"], "request": "other"}}]
    docs: list[object] = [hand, mixed, [], {"targets": []}, ["x"], [{"labels": "managed_by"}]]
    for doc in docs:
        assert not targets.is_generated(json.dumps(doc).encode()) and targets.owner(json.dumps(doc).encode()) is None
    both = json.dumps(two_owners).encode()
    assert targets.is_generated(both) and targets.owner(both) is None  # whose it is cannot be said
    for junk in (b"", b"not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b" " * (2 * 1024 * 1024) + b"[]"):
        assert not targets.is_generated(junk) and targets.owner(junk) is None


@pytest.mark.parametrize("name", ["team", "_x", "Team_Name2", "pve_idx", "A"])
def test_a_prometheus_label_name_is_allowed(name: str) -> None:
    assert label_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Team-Name", "label 'Team-Name': may use a-z, A-Z, 0-9 and '_', not starting with a digit"),
        ("2fa", "label '2fa': may use a-z, A-Z, 0-9 and '_', not starting with a digit"),
        ("", "label '': may use a-z"),
        ("tëam", "label 'tëam': may use a-z"),
        ("a\nb", "label 'a\\nb': may use a-z"),
        ("__scheme__", "label '__scheme__': names starting with '__' are Prometheus's own"),
        ("request", "label 'request': the reconciler sets it itself (exporter, managed_by, pve_id,"),
        ("pve_tags", "label 'pve_tags': the reconciler sets it itself"),
    ],
)
def test_a_label_name_prometheus_refuses_or_the_reconciler_sets_is_a_problem_in_plain_words(
    name: str, problem: str
) -> None:
    found = label_problem(name)
    assert found is not None and found.startswith(problem)


TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates too
LABEL = st.one_of(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True), TEXT)


@st.composite
def any_target(draw: st.DrawFn) -> Target:
    return Target(
        request=draw(TEXT),
        address=str(draw(st.ip_addresses(v=4))),
        exporters=tuple(draw(st.lists(st.tuples(TEXT, st.integers(1, 65535)), min_size=1, max_size=4))),
        vmid=draw(st.integers(100, 999_999_999)),
        node=draw(TEXT),
        name=draw(TEXT),
        tags=tuple(draw(st.lists(TEXT, max_size=4))),
        labels=draw(st.dictionaries(LABEL, TEXT, max_size=6)),
    )


@given(any_target())
def test_any_target_renders_as_a_file_sd_list_that_is_the_reconcilers(target: Target) -> None:
    text = targets.render(target)
    groups = json.loads(text)
    assert isinstance(groups, list) and len(groups) == len(target.exporters)
    for group, (exporter, port) in zip(groups, target.exporters, strict=True):
        assert set(group) == {"targets", "labels"}
        assert group["targets"] == [f"{target.address}:{port}"]
        labels = group["labels"]
        assert all(isinstance(k, str) and re.fullmatch(LABEL_NAME, k) for k in labels)
        assert all(isinstance(v, str) for v in labels.values())
        assert not any(k.startswith("__") for k in labels)
        own = {k: v for k, v in target.labels.items() if label_problem(k) is None}
        assert labels == {**own, **pve_labels(target, exporter)}
    assert targets.is_generated(text.encode()) and targets.owner(text.encode()) == target.request
    assert text.endswith("]\n") and targets.render(target) == text and text.isascii()


def write(path: Path, text: str) -> None:
    """As a writer that replaces the file whole; the temporary name is outside the *.json glob."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def test_prometheus_discovers_a_written_target_file_with_its_labels_and_drops_it_once_deleted(
    prometheus: Prometheus,
) -> None:
    node_port, app_port = free_port(), free_port()  # nothing listens there: a scrape, if any, is refused
    target = Target(
        request="blog",
        address="127.0.0.1",
        exporters=(("node", node_port), ("nginx", app_port)),
        vmid=201,
        node="pve1",
        name="blog",
        tags=("reconciler", "web"),
        labels={"team": "web", "__scheme__": "https"},
    )
    path = prometheus.targets_dir / "blog.json"
    write(path, targets.render(target))
    expected = {
        f"127.0.0.1:{port}": {**pve_labels(target, exporter), "team": "web"} for exporter, port in target.exporters
    }

    def discovered() -> bool:
        found = {t["labels"].get("instance"): t for t in prometheus.active_targets()}
        if set(found) != set(expected):
            return False
        for instance, labels in expected.items():
            got = found[instance]
            assert got["labels"] == {**labels, "instance": instance, "job": "reconciler"}
            assert got["scrapeUrl"] == f"http://{instance}/metrics"  # the request's __scheme__ never got there
            assert got["discoveredLabels"]["__meta_filepath"] == str(path)
        return True

    prometheus.wait_for(discovered, "both exporters' targets with their labels")

    path.unlink()
    prometheus.wait_for(lambda: prometheus.active_targets() == [], "the targets to go with their file")
