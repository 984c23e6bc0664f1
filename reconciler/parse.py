"""Reading and writing the YAML files the reconciler shares with people, and pydantic's errors in plain words."""

from __future__ import annotations

import re

import yaml
from pydantic import ValidationError

from reconciler.model.problem import Problem

try:  # libyaml is many times faster on thousands of request and status files
    from yaml import CSafeDumper as SafeDumper
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper, SafeLoader  # type: ignore[assignment]

_BOOL = "tag:yaml.org,2002:bool"


class Yaml12Loader(SafeLoader):
    """libyaml's safe loader with YAML 1.2 booleans: only true and false.

    YAML 1.1 also reads on, off, yes, no, y and n as booleans, so `name: on`, a valid DNS label, would not
    be a string. Only the resolver, which runs in Python either way, changes: parsing stays in C.
    """


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def from_validation_error(error: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into one Problem per field, in the operator's words."""
    problems = []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"])
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        elif item["type"] == "missing":
            reason = "required"
        elif reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        problems.append(Problem(field, reason))
    return problems


def dump_yaml(doc: object) -> str:
    """YAML text of a plain document, keys in the order given."""
    return yaml.dump(doc, Dumper=SafeDumper, sort_keys=False, allow_unicode=True)


def load_yaml(text: str | bytes) -> object:
    """Parse YAML safely, with YAML 1.2 booleans; raises ValueError with the line of the first error."""
    try:
        return yaml.load(text, Loader=Yaml12Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"not valid YAML{where}: {problem}") from None
