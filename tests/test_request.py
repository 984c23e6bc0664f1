"""The request format: the published JSON Schema is the one the models generate, and the examples are valid."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import PROFILES, SITE
from pydantic import ValidationError

from reconciler.desired.request import DNS_LABEL, Request, json_schema
from reconciler.desired.validate import RequestFile, validate

ROOT = Path(__file__).resolve().parent.parent


def test_the_published_schema_is_not_stale() -> None:
    published = (ROOT / "schemas" / "request.schema.json").read_text()
    assert published == json_schema(PROFILES), "regenerate: reconciler schema > schemas/request.schema.json"
    schema = json.loads(published)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {
        "apiVersion",
        "kind",
        "name",
        "profile",
        "node",
        "storage",
        "resources",
        "network",
    }


def test_the_schema_knows_the_optional_package_sets_of_each_profile() -> None:
    rules = {
        r["if"]["properties"]["profile"]["const"]: r["then"]["properties"]
        for r in json.loads(json_schema(PROFILES))["allOf"]
    }
    assert rules["generic-service"]["package_sets"] == {"items": {"enum": ["docker", "node-exporter"]}}
    assert rules["generic-service"]["web_server"] == {"not": {}}
    assert rules["static-website"]["package_sets"] == {"maxItems": 0}
    assert rules["static-website"]["web_server"] == {"enum": ["nginx", "apache"]}


def test_the_example_requests_are_valid() -> None:
    files = [RequestFile(str(p), p.stem, p.read_bytes()) for p in sorted((ROOT / "examples/requests").glob("*.yaml"))]
    valid, invalid = validate(files, PROFILES, SITE)
    assert invalid == []
    assert [d.name for d in valid] == ["blog", "grafana", "metrics"]


BASE = {
    "apiVersion": "reconciler/v1",
    "kind": "lxc",
    "name": "blog",
    "profile": "generic-service",
    "node": "pve1",
    "storage": "local-lvm",
    "resources": {"cores": 1, "memory": 512, "disk": 8},
    "network": {"mode": "dhcp", "bridge": "vmbr0"},
}
PATTERNED = {  # every field a pattern checks, with a value it accepts
    "name": ("name", "blog"),
    "hostname": ("hostname", "blog"),
    "tags": ("tags", ["web"]),
    "package_sets": ("package_sets", ["docker"]),
    "service.domain": ("service", {"domain": "blog.example.com"}),
    "service.health": ("service", {"health": "/healthz"}),
}


def _with(key: str, value: Any) -> dict[str, Any]:
    return {**BASE, key: value}


def _bent(value: Any, suffix: str) -> Any:
    """The value with suffix after its text (in its first item, or each value of a mapping)."""
    if isinstance(value, list):
        return [value[0] + suffix]
    if isinstance(value, dict):
        return {k: v + suffix for k, v in value.items()}
    return value + suffix


@pytest.mark.parametrize("field", sorted(PATTERNED))
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\nother: x", " ", "\x00", ";reboot", "'", "\u0430"])
def test_every_pattern_holds_to_the_very_end_of_the_value(field: str, suffix: str) -> None:
    key, value = PATTERNED[field]
    Request.model_validate(_with(key, value))  # the value itself is accepted
    with pytest.raises(ValidationError) as refused:
        Request.model_validate(_with(key, _bent(value, suffix)))
    assert {str(e["loc"][0]) for e in refused.value.errors()} == {field.split(".")[0]}


def test_the_patterns_are_checked_by_an_engine_whose_dollar_is_the_end_of_the_text() -> None:
    # Python's re would let "blog\n" match "^...$"; pydantic's Rust engine does not. Were the models switched to
    # regex_engine="python-re", the test above would fail; this one says why.
    assert re.match(DNS_LABEL, "blog\n") is not None
    assert Request.model_config.get("regex_engine", "rust-regex") == "rust-regex"
