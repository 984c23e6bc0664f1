"""Reading and writing the YAML files the reconciler shares with people, and pydantic's errors in plain words.

Everything it reads from the repository (requests, its own status and Caddy files, which anyone with push access
can edit, the confirm file) and the config goes through load_yaml, so every cap on hostile YAML lives here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import annotated_types
import yaml
from pydantic import ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.model.problem import Problem

try:  # libyaml is many times faster on thousands of request and status files
    from yaml import CSafeDumper as SafeDumper
    from yaml import CSafeLoader as SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeDumper, SafeLoader  # type: ignore[assignment]

# A request file is a few hundred bytes and a status file a few KiB; 64 KiB leaves room and bounds the work.
MAX_FILE_BYTES = 64 * 1024
# Values once aliases are expanded: a "billion laughs" file is a few hundred bytes that expand to 10**9 values
# (PyYAML shares them, so the blow-up comes later, when anything walks the result).
MAX_NODES = 10_000
MAX_DEPTH = 32  # nesting of mappings and lists, aliases expanded; every file the reconciler reads needs under 6
SHOWN = 60  # characters of a value from an input file that a message quotes

_BOOL = "tag:yaml.org,2002:bool"
_MERGE = "tag:yaml.org,2002:merge"
_STANDARD_TAG = "tag:yaml.org,2002:"


class _Refused(ValueError):
    """A cap or rule of load_yaml, at a line of the file (None: the whole file)."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(f"not valid YAML at line {line}: {reason}" if line is not None else reason)


class Yaml12Loader(SafeLoader):
    """libyaml's safe loader with YAML 1.2 booleans: only true and false.

    YAML 1.1 also reads on, off, yes, no, y and n as booleans, so `name: on`, a valid DNS label, would not
    be a string. Only the resolver, which runs in Python either way, changes: parsing stays in C.
    """

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        """A mapping; a key given twice, or merged in with <<, is refused (PyYAML keeps the last: a reviewer reads
        the first)."""
        if isinstance(node, MappingNode):
            first: dict[object, int] = {}
            for key_node, _ in node.value:
                line = key_node.start_mark.line + 1
                if key_node.tag == _MERGE:
                    # YAML 1.2 has no merge key, and a merged value overridden beside it is the same trap as a
                    # duplicate: a reviewer reads one value while another is applied.
                    raise _Refused(line, "a merge key (<<) is not allowed: write each key out")
                if not isinstance(key_node, ScalarNode):
                    continue  # complex keys are refused by PyYAML
                key = self.construct_object(key_node)
                if key in first:
                    raise _Refused(line, f"duplicate key {quoted(key_node.value)} (first at line {first[key]})")
                first[key] = line
        return super().construct_mapping(node, deep)  # type: ignore[arg-type]


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def shorten(text: str, limit: int = SHOWN) -> str:
    """text cut to limit characters, with an ellipsis when it was longer."""
    return text if len(text) <= limit else text[:limit] + "…"


def quoted(value: str, limit: int = SHOWN) -> str:
    """A value from an input file for a message: quoted, control characters escaped, and shortened."""
    return repr(shorten(value, limit))


# Kept as they are: printable ASCII and the rest of Unicode, less what YAML reads as a line break or refuses
# (C0, C1, U+2028, U+2029, surrogates) and the invisible format characters that make a reader see another text
# (soft hyphen, zero-width ones, bidirectional overrides and isolates, the byte order mark).
_UNSAFE_IN_LINE = re.compile(
    r"[^\x20-\x7e\xa0-\xac\xae-\u200a\u2010-\u2027\u202f-\u205f\u2070-\ud7ff\ue000-\ufefe\uff00-\ufffd"
    r"\U00010000-\U0010ffff]|\\"
)


def one_line(text: str) -> str:
    """text for one line of a generated file (a comment): backslash, line breaks and control characters escaped."""
    return _UNSAFE_IN_LINE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def counted(count: int, noun: str) -> str:
    """count and noun for a message, the noun plural unless count is 1: "1 problem", "2 problems"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# What each pattern of a model (requests, profiles, config) allows, for a person: pydantic would print the regex.
# Keyed by the pattern's text; tests/test_parse.py checks that every pattern of those models is here.
PATTERN_WORDS: dict[str, str] = {
    # cloud_init.user in reconciler/desired/request.py: a Linux user name as cloud-init creates it
    r"^[a-z_][a-z0-9_-]{0,31}$": "may use a-z, 0-9, '_' and '-', 1-32 characters, starting with a letter or '_'",
    # DNS_LABEL in reconciler/desired/request.py: names, hostnames, package sets
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$": (
        "may use a-z, 0-9 and '-', 1-63 characters, not starting or ending with '-'"
    ),
    # DOMAIN in reconciler/desired/request.py
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$": (
        "must be a DNS name such as blog.example.com (a-z, 0-9, '-', dots)"
    ),
    r"^[a-z0-9_][a-z0-9_+.-]{0,63}$": (
        "may use a-z, 0-9, '_', '+', '.' and '-', 1-64 characters, starting with a-z, 0-9 or '_'"
    ),
    r"^/[A-Za-z0-9._~/%-]*$": "must be a URL path such as /healthz: '/' first, then letters, digits and . _ ~ / % -",
    r"^[a-z0-9-]+$": "may use a-z, 0-9 and '-'",
    # reconciler/config.py
    r"^[A-Za-z0-9][A-Za-z0-9._-]*$": "may use letters, digits, '.', '_' and '-', starting with a letter or digit",
    r"^[A-Za-z0-9][A-Za-z0-9._/-]*$": (
        "must be a branch name: letters, digits, '.', '_', '/' and '-', starting with a letter or digit"
    ),
    r"^[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*$": (
        "must be a Proxmox API token ID, user@realm!token, such as reconciler@pve!gitops"
    ),
    r"^[a-z_][a-z0-9_-]*$": "must be a user name: a-z, 0-9, '_' and '-', starting with a-z or '_'",
    r"^[A-Za-z0-9.:-]+$": "must be a host name or an IP address (letters, digits, '.', ':' and '-')",
    r"^[A-Za-z0-9._-]+:vztmpl/[^/\s]+$": (
        "must be a container template volume such as local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
    ),
    r"^[A-Za-z0-9][A-Za-z0-9._/-]*\.ya?ml$": (
        "must be a path inside the repository ending in .yaml or .yml (letters, digits, '.', '_', '/' and '-')"
    ),
    r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$": "must be host:port, such as 127.0.0.1:9105 or [::1]:9105",
    r"^[A-Z_][A-Z0-9_]*$": "must be an environment variable name: A-Z, 0-9 and '_', not starting with a digit",
    # DNS_NAME in reconciler/config.py: a zone
    r"^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$": (
        "must be a DNS name such as lab.example (letters, digits, '-', dots)"
    ),
}

# Pydantic's error types in plain words: what is allowed ({...} from the error's context).
_TYPE_WORDS: dict[str, str] = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (key: value)",
    "model_type": "must be a mapping (key: value)",
    "model_attributes_type": "must be a mapping (key: value)",
    "literal_error": "must be {expected}",
    "enum": "must be {expected}",
    "greater_than_equal": "must be {ge} or more",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be {le} or less",
    "less_than": "must be less than {lt}",
    "ip_v4_address": "must be an IPv4 address such as 192.168.50.1",
    "ip_v4_interface": "must be an IPv4 address with its prefix length, such as 192.168.50.10/24",
}


class Between(annotated_types.GroupedMetadata):
    """A whole number from low to high, both included: the JSON Schema keeps both bounds, and a value outside
    them reads "must be between low and high" (pydantic names only the bound that failed)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def __iter__(self) -> Iterator[object]:
        yield annotated_types.Ge(self.low)
        yield annotated_types.Le(self.high)
        yield WrapValidator(self._check)

    def _check(self, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        try:
            return handler(value)
        except ValidationError as exc:
            if any(item["type"] in ("greater_than_equal", "less_than_equal") for item in exc.errors()):
                raise PydanticCustomError(
                    "out_of_range", "must be between {low} and {high}", {"low": self.low, "high": self.high}
                ) from None
            raise


def from_validation_error(error: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into one Problem per field, in the operator's words."""
    return [
        Problem(".".join(_part(part) for part in item["loc"]), _reason(item))
        for item in error.errors(include_url=False)
    ]


def _reason(item: ErrorDetails) -> str:
    """What is wrong with one value and what is allowed, in plain words; the value shown when it is short."""
    kind, context = item["type"], item.get("ctx", {})
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if kind in ("value_error", "assertion_error"):
        return str(context.get("error", item["msg"]))
    if kind == "out_of_range":
        words = item["msg"]
    elif kind == "string_pattern_mismatch":
        words = PATTERN_WORDS.get(str(context.get("pattern")), "is not in a form allowed here")
    elif kind == "string_too_long":
        words = f"must be at most {counted(context['max_length'], 'character')}"
    elif kind == "string_too_short":
        words = f"must be at least {counted(context['min_length'], 'character')}"
    elif kind == "too_long":
        words = f"must have at most {counted(context['max_length'], 'item')}"
    elif kind == "too_short":
        words = f"must have at least {counted(context['min_length'], 'item')}"
    elif kind in _TYPE_WORDS:
        words = _TYPE_WORDS[kind].format(**context)
    else:  # a type no model here meets yet: pydantic's words, less its "Input"
        return item["msg"].replace("Input should be", "must be")
    return f"{words}; got {_shown(item['input'])}"


def _shown(value: object) -> str:
    """The value a problem is about, as a person wrote it: short, quoted when text, its kind when a collection."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, int | float):
        return shorten(str(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return "nothing" if value is None else shorten(type(value).__name__)


def _part(part: int | str) -> str:
    """One step of a field's path; a key from the file is shown as written only when it is short and plain."""
    text = str(part)
    return text if len(text) <= SHOWN and text.isprintable() and "." not in text else quoted(text)


def dump_yaml(doc: object) -> str:
    """YAML text of a plain document, keys in the order given."""
    return yaml.dump(doc, Dumper=SafeDumper, sort_keys=False, allow_unicode=True)


def load_yaml(text: str | bytes) -> object:
    """Parse one YAML document safely, with YAML 1.2 booleans and the caps above; raises ValueError with a reason.

    Refused: more than MAX_FILE_BYTES, empty, not UTF-8, NUL bytes, several documents, any explicit tag,
    duplicate keys, nesting beyond MAX_DEPTH and more than MAX_NODES values with aliases expanded.
    """
    data = _checked_bytes(text)
    loader = Yaml12Loader(data)
    try:
        node = _Composer(loader).single_document()
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"not valid YAML{where}: {problem}") from None
    except _Refused:
        raise
    except (ValueError, OverflowError) as exc:  # a constructor's own check: a timestamp like 2024-13-45
        raise ValueError(f"not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _checked_bytes(text: str | bytes) -> bytes:
    """The file's bytes once size, text encoding and NUL bytes are known good."""
    if isinstance(text, str):
        if len(text) > MAX_FILE_BYTES:  # each character is at least one byte: no need to encode a huge text
            raise ValueError(f"the file is larger than {MAX_FILE_BYTES // 1024} KiB")
        try:
            text = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not UTF-8 text: it holds a lone surrogate character") from None
    if len(text) > MAX_FILE_BYTES:
        raise ValueError(f"the file is larger than {MAX_FILE_BYTES // 1024} KiB ({len(text)} bytes)")
    if not text.strip():
        raise ValueError("the file is empty")
    nul = text.find(b"\0")
    if nul >= 0:
        line = text.count(b"\n", 0, nul) + 1
        raise ValueError(f"holds a NUL byte at line {line}: a binary file, not YAML text")
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = text.count(b"\n", 0, exc.start) + 1
        column = exc.start - (text.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = text[exc.start]
        raise ValueError(f"not UTF-8 text: byte 0x{byte:02x} at line {line}, column {column}") from None
    return text


class _Composer:
    """Builds the node graph from libyaml's events, as PyYAML's composer does, with the caps on the way.

    An alias adds the whole size and height of its anchor, so what is counted is what any walk of the result
    meets. An alias inside its own anchor is refused (PyYAML would make a list that contains itself).
    """

    def __init__(self, loader: Yaml12Loader) -> None:
        # PyYAML's stubs type events and marks loosely (everything may be None): libyaml's are complete.
        self.events: Any = loader
        self.anchors: dict[str, tuple[Node, int, int]] = {}  # anchor -> node, values, height
        self.count = 0

    def single_document(self) -> Node:
        events = self.events
        events.get_event()  # StreamStartEvent
        if events.check_event(StreamEndEvent):
            raise _Refused(None, "holds no YAML document, only comments")
        events.get_event()  # DocumentStartEvent
        node, _, _ = self._node(1)
        events.get_event()  # DocumentEndEvent
        if not events.check_event(StreamEndEvent):
            line = events.peek_event().start_mark.line + 1
            raise _Refused(line, "a second document (after ---): a file holds one document only")
        return node

    def _node(self, depth: int) -> tuple[Node, int, int]:
        """The next node, the number of values in it (aliases expanded) and its height."""
        event = self.events.get_event()
        line: int = event.start_mark.line + 1
        if isinstance(event, AliasEvent):
            anchor = str(event.anchor)
            found = self.anchors.get(anchor)
            if found is None:
                raise _Refused(line, f"alias *{shorten(anchor)} names no complete anchor before it")
            self._count(found[1], line)
            if depth + found[2] - 1 > MAX_DEPTH:
                raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels (aliases expanded)")
            return found
        if event.tag is not None:
            tag: str = event.tag
            shown = "!!" + tag[len(_STANDARD_TAG) :] if tag.startswith(_STANDARD_TAG) else tag
            raise _Refused(line, f"the tag {shorten(shown)} is not allowed: write plain values, without tags")
        if depth > MAX_DEPTH:
            raise _Refused(line, f"nested deeper than {MAX_DEPTH} levels")
        self._count(1, line)
        if isinstance(event, ScalarEvent):
            node, size, height = self._scalar(event), 1, 1
        elif isinstance(event, SequenceStartEvent):
            node, size, height = self._collection(SequenceNode, event, depth, SequenceEndEvent, 1)
        elif isinstance(event, MappingStartEvent):
            node, size, height = self._collection(MappingNode, event, depth, MappingEndEvent, 2)
        else:  # pragma: no cover - libyaml makes no other event where a value belongs
            raise _Refused(line, f"unexpected {type(event).__name__}")
        if event.anchor is not None:
            self.anchors[event.anchor] = (node, size, height)
        return node, size, height

    def _scalar(self, event: Any) -> Node:
        tag = self.events.resolve(ScalarNode, event.value, event.implicit)
        node: Node = _new(ScalarNode, tag, event.value, event.start_mark, event.end_mark, style=event.style)
        return node

    def _collection(
        self, kind: type[Node], event: Any, depth: int, end: type[Any], arity: int
    ) -> tuple[Node, int, int]:
        """A sequence (arity 1) or a mapping (arity 2: key, value) and its items, the caps checked on the way."""
        items: list[Any] = []
        size, height = 1, 1
        while not self.events.check_event(end):
            group = []
            for _ in range(arity):
                item, item_size, item_height = self._node(depth + 1)
                group.append(item)
                size, height = size + item_size, max(height, item_height + 1)
            items.append(group[0] if arity == 1 else tuple(group))
        end_mark = self.events.get_event().end_mark
        tag = self.events.resolve(kind, None, True)
        node: Node = _new(kind, tag, items, event.start_mark, end_mark, flow_style=event.flow_style)
        return node, size, height

    def _count(self, values: int, line: int) -> None:
        self.count += values
        if self.count > MAX_NODES:
            raise _Refused(line, f"more than {MAX_NODES} values (aliases expanded): far more than any file here needs")


_new: Any = lambda kind, *args, **kwargs: kind(*args, **kwargs)  # noqa: E731 - the node classes are untyped
