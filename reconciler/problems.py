"""A problem with an input file: which field, and why. Shared by config, profile and request checks."""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from pydantic import ValidationError

try:  # libyaml is many times faster on thousands of request and status files
    from yaml import CSafeDumper as SafeDumper
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper, SafeLoader  # type: ignore[assignment]


@dataclass(frozen=True, order=True)
class Problem:
    """One reason an input is refused; field is a dotted path ('' for the whole file)."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


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
    """Parse YAML safely; raises ValueError with the line of the first error."""
    try:
        return yaml.load(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"not valid YAML{where}: {problem}") from None
