"""The request format: the published JSON Schema is the one the models generate, and the examples are valid."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import PROFILES, SITE

from reconciler.desired.request import json_schema
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
