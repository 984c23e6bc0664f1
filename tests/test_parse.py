"""load_yaml's caps: every file the reconciler reads (requests, its own status and Caddy files, the confirm file,
the config) is refused with a plain reason when it is hostile or broken, fast and in bounded memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from conftest import PROFILES, SITE, OperatorClone, request_yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from reconciler.config import Config, ConfigError, load_config
from reconciler.desired.profile import Profile
from reconciler.desired.request import DNS_LABEL, Request
from reconciler.desired.validate import validate
from reconciler.model.desired import RequestFile
from reconciler.parse import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    PATTERN_WORDS,
    Between,
    counted,
    from_validation_error,
    load_yaml,
)
from reconciler.report import caddy, status
from reconciler.runtime import Runtime
from reconciler.source import confirmed_revision


def laughs(levels: int = 9, prefix: str = "") -> bytes:
    """A "billion laughs" file: each level lists the one before nine times (9**9 values once expanded)."""
    lines = [prefix + 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return ("\n".join(lines) + "\n").encode()


# The status file bomb of the issue: the header the reconciler recognises, then an alias bomb among its fields.
STATUS_BOMB = (
    b"# Written by reconciler for requests/blog.yaml; the next cycle overwrites edits.\n"
    b"apiVersion: reconciler/v1\nkind: Status\nname: blog\nrequest: requests/blog.yaml\nphase: Ready\nmessage: ok\n"
    + laughs()
    + b"problems: *l8\n"
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b"# only a comment\n", "holds no YAML document, only comments"),
        (b"name: a\x00b\n", "holds a NUL byte at line 1: a binary file, not YAML text"),
        (b"name: a\ndescription: caf\xe9\n", "not UTF-8 text: byte 0xe9 at line 2, column 17"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "holds a NUL byte at line 3"),
        (b"\xff\xfen\x00a\x00", "holds a NUL byte"),  # UTF-16: never decoded as such
        (b"x" * (MAX_FILE_BYTES + 1), f"the file is larger than 64 KiB ({MAX_FILE_BYTES + 1} bytes)"),
        (b"name: a\n---\nname: b\n", "not valid YAML at line 2: a second document (after ---)"),
        (b"name: a\n...\n---\nname: b\n", "not valid YAML at line 3: a second document"),
        (
            b"name: a\nnode: pve1\nstorage: x\nnode: pve2\n",
            "not valid YAML at line 4: duplicate key 'node' (first at line 2)",
        ),
        (b"a: {x: 1, x: 2}\n", "not valid YAML at line 1: duplicate key 'x' (first at line 1)"),
        (b"true: 1\n1: 2\n", "not valid YAML at line 2: duplicate key '1' (first at line 1)"),
        (
            b"a: !!python/object/apply:os.system ['touch /tmp/x']\n",
            "not valid YAML at line 1: the tag !!python/object/apply:os.system is not allowed",
        ),
        (b"a: !!python/name:os.system\n", "the tag !!python/name:os.system is not allowed"),
        (b"a: !custom x\n", "not valid YAML at line 1: the tag !custom is not allowed"),
        (b"a: !!str x\n", "the tag !!str is not allowed: write plain values, without tags"),
        (b"!!map {a: 1}\n", "the tag !!map is not allowed"),
        (b"a: !<tag:example.com,2000:x> 1\n", "the tag tag:example.com,2000:x is not allowed"),
        (b"a: &a [1, *a]\n", "not valid YAML at line 1: alias *a names no complete anchor before it"),
        (b"a: *nowhere\n", "alias *nowhere names no complete anchor before it"),
        (("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode(), f"nested deeper than {MAX_DEPTH} levels"),
        (
            b"a: &a " + b"[" * 20 + b"1" + b"]" * 20 + b"\nb: " + b"[" * 20 + b"*a" + b"]" * 20 + b"\n",
            f"not valid YAML at line 2: nested deeper than {MAX_DEPTH} levels (aliases expanded)",
        ),
        (laughs(), f"not valid YAML at line 5: more than {MAX_NODES} values (aliases expanded)"),
        (("[" + "1," * 10_001 + "1]").encode(), "more than 10000 values"),
        (b"a: [1, 2\n", "not valid YAML at line 2, column 1: did not find expected ',' or ']'"),
        (b"a: 2024-13-45\n", "not valid YAML: month must be in 1..12"),
    ],
)
def test_a_hostile_or_broken_file_is_refused_with_a_plain_reason(text: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        load_yaml(text)
    assert reason in str(refused.value)


def test_text_is_capped_as_bytes_are() -> None:
    with pytest.raises(ValueError, match="larger than 64 KiB"):
        load_yaml("é" * (MAX_FILE_BYTES // 2 + 1))  # fewer characters than the cap, more bytes
    with pytest.raises(ValueError, match="lone surrogate"):
        load_yaml("a: \ud800\n")


def test_ordinary_yaml_still_reads_as_before() -> None:
    assert load_yaml(b"\xef\xbb\xbf---\na: 1\n...\n") == {"a": 1}  # a byte order mark and explicit markers
    assert load_yaml("name: on\nstart: true\nport: 8080\nnone: ~\n") == {
        "name": "on",
        "start": True,
        "port": 8080,
        "none": None,
    }
    assert load_yaml(b"base: &b {cores: 1, memory: 512}\nthis: *b\n") == {
        "base": {"cores": 1, "memory": 512},
        "this": {"cores": 1, "memory": 512},
    }
    small = laughs(levels=3)  # 9**3 values: an alias-heavy file under the cap is read
    assert len(load_yaml(small)["l2"]) == 9  # type: ignore[index]
    assert load_yaml(("[" * MAX_DEPTH + "]" * MAX_DEPTH).encode()) is not None


# Run in a child with its address space and CPU time capped: a bomb that got through would die there (MemoryError
# or SIGXCPU) instead of taking the test machine down, and the test would fail.
CHILD = textwrap.dedent(
    """
    import json, resource, sys
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))
    from reconciler.desired.validate import validate
    from reconciler.model.desired import RequestFile
    from reconciler.parse import load_yaml
    from reconciler.report import status

    text = sys.stdin.buffer.read()
    if sys.argv[1] == "load":
        try:
            doc = load_yaml(text)
        except ValueError as exc:
            print("refused:", exc)
        else:
            print("read", len(json.dumps(doc)))  # what any use does: validation, a log line, a status file
    elif sys.argv[1] == "request":
        valid, invalid = validate([RequestFile("requests/w.yaml", "w", text)], {}, None)
        print("invalid:", "; ".join(str(p) for i in invalid for p in i.problems))
    else:
        standing = status.parse(text)
        print("ignored" if standing is None else "read " + str(len(status.render(standing))))
    """
)
ADDRESS_SPACE = 400 * 1024 * 1024  # the child needs about 60 MB; the bomb, expanded, many GB


@pytest.mark.parametrize(
    ("mode", "text", "expected"),
    [
        ("load", laughs(), "refused: not valid YAML at line 5: more than 10000 values"),
        ("request", laughs(), "invalid: not valid YAML at line 5: more than 10000 values"),
        ("status", STATUS_BOMB, "ignored"),
    ],
)
def test_a_billion_laughs_file_is_refused_fast_and_in_bounded_memory(
    mode: str, text: bytes, expected: str, tmp_path: Path
) -> None:
    if mode == "status":
        assert len(text) < 1024 and status.is_generated(text)  # the 772-byte status file, near enough
    child = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(ADDRESS_SPACE)],
        input=text,
        capture_output=True,
        cwd=tmp_path,  # the reconciler installed, not a copy that happens to lie in the working directory
        timeout=120,
    )
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    assert child.stdout.decode().startswith(expected)


def test_a_duplicate_key_never_lets_the_last_value_win() -> None:
    text = request_yaml("w") + "node: pve2\n"
    valid, invalid = validate([RequestFile("requests/w.yaml", "w", text.encode())], PROFILES, SITE)
    assert valid == []
    [problem] = invalid[0].problems
    assert str(problem) == "not valid YAML at line 16: duplicate key 'node' (first at line 6)"


def test_the_confirm_file_the_service_files_and_the_config_get_the_same_caps(tmp_path: Path) -> None:
    assert confirmed_revision(b"confirm: abc\n") == "abc"
    assert confirmed_revision(laughs(prefix="confirm: abc\n")) is None
    assert confirmed_revision(b"confirm: abc\nconfirm: def\n") is None
    bomb = caddy.render("a", "requests/a.yaml", "a.example.com", "1.2.3.4", 80).encode() + laughs()
    assert caddy.domains({"caddy/services/a.example.com.yaml": bomb}) == {"a.example.com": "a"}
    config = tmp_path / "config.yaml"
    config.write_text("git:\n  remote: x\ngit:\n  remote: y\n")
    with pytest.raises(ConfigError, match="duplicate key 'git' \\(first at line 1\\)"):
        load_config(config)


HOSTILE = {
    "bomb": laughs(),
    "dupes": request_yaml("dupes").encode() + b"node: pve2\n",
    "tagged": b"!!python/object/apply:os.system ['true']\n",
    "custom": request_yaml("custom").replace("node: pve1", "node: !node pve1").encode(),
    "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00",
    "latin1": request_yaml("latin1").replace("test workload", "caf\xe9").encode("latin-1"),
    "empty": b"",
    "twice": request_yaml("twice").encode() + b"---\n" + request_yaml("twice").encode(),
    "huge": request_yaml("huge").encode() + b"# " + b"x" * MAX_FILE_BYTES + b"\n",
}


def test_hostile_request_files_are_invalid_with_a_reason_and_the_others_are_provisioned(
    operator: OperatorClone, runtime: Runtime
) -> None:
    for name, text in HOSTILE.items():
        path = operator.path / "requests" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
    operator.write("requests/good.yaml", request_yaml("good"))
    operator.push("hostile files beside a good one")

    report = runtime.reconciler.once()

    assert report.statuses["good"].phase == "Ready"
    operator.pull()
    reasons = {}
    for name in HOSTILE:
        st = operator.yaml(f"status/{name}.yaml")
        assert st["phase"] == "Invalid", name
        reasons[name] = st["problems"]
    assert {name: problems[0] for name, problems in reasons.items()} == {
        "bomb": "not valid YAML at line 5: more than 10000 values (aliases expanded): far more than any file here"
        " needs",
        "dupes": "not valid YAML at line 16: duplicate key 'node' (first at line 6)",
        "tagged": "not valid YAML at line 1: the tag !!python/object/apply:os.system is not allowed: write plain"
        " values, without tags",
        "custom": "not valid YAML at line 6: the tag !node is not allowed: write plain values, without tags",
        "binary": "holds a NUL byte at line 3: a binary file, not YAML text",
        "latin1": "not UTF-8 text: byte 0xe9 at line 5, column 17",
        "empty": "the file is empty",
        "twice": "not valid YAML at line 16: a second document (after ---): a file holds one document only",
        "huge": reasons["huge"][0],
    }
    # Refused by load_yaml, or before it by the read from the checkout, which caps at the same size.
    assert "64 KiB" in reasons["huge"][0] or str(MAX_FILE_BYTES) in reasons["huge"][0]
    assert all(len(problems) == 1 for problems in reasons.values())


@pytest.mark.parametrize(
    "text",
    [
        "node: pve1\n<<: {node: pve2}\n",  # a merged value overridden beside it
        "<<: {node: pve1, node: pve2}\n",  # a duplicate inside the merged mapping
        "<<: [{node: pve1}, {node: pve2}]\n",  # two merged mappings naming one key
        "base: &b {node: pve2}\nthis: {<<: *b, node: pve1}\n",
    ],
)
def test_a_merge_key_is_refused_so_no_value_hides_behind_another(text: str) -> None:
    with pytest.raises(ValueError, match=r"line \d+: a merge key \(<<\) is not allowed"):
        load_yaml(text)


# pydantic's errors in plain words: what is wrong and what is allowed, never a regex or "Input should be".


def _patterns(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from [value] if key == "pattern" else _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


def test_every_pattern_of_a_request_a_profile_or_the_config_has_plain_words() -> None:
    found = {p for model in (Request, Profile, Config) for p in _patterns(model.model_json_schema())}
    assert found == set(PATTERN_WORDS), "say in PATTERN_WORDS what a new pattern allows"


class _Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = 0
    flag: StrictBool = False
    vlan: Annotated[int, Between(1, 4094)] | None = None
    short: Annotated[str, Field(max_length=1)] = ""
    code: Annotated[str, Field(max_length=3)] = ""
    items: Annotated[list[int], Field(max_length=2)] = []
    name: Annotated[str, Field(pattern=DNS_LABEL)] = "a"
    odd: Annotated[str, Field(pattern=r"^x+$")] = "x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"count": "many"}, "count: must be a whole number; got 'many'"),
        ({"count": 1.5}, "count: must be a whole number; got 1.5"),
        ({"flag": "yes"}, "flag: must be true or false; got 'yes'"),
        ({"flag": {"a": 1}}, "flag: must be true or false; got a mapping"),
        ({"vlan": 0}, "vlan: must be between 1 and 4094; got 0"),
        ({"vlan": 5000}, "vlan: must be between 1 and 4094; got 5000"),
        ({"vlan": "ten"}, "vlan: must be a whole number; got 'ten'"),
        ({"short": "ab"}, "short: must be at most 1 character; got 'ab'"),
        ({"code": "abcd"}, "code: must be at most 3 characters; got 'abcd'"),
        ({"items": [1, 2, 3]}, "items: must have at most 2 items; got a list"),
        (
            {"name": "-x"},
            "name: may use a-z, 0-9 and '-', 1-63 characters, not starting or ending with '-'; got '-x'",
        ),
        ({"odd": "y"}, "odd: is not in a form allowed here; got 'y'"),
        ({"colour": 1}, "colour: unknown key"),
    ],
)
def test_each_kind_of_mistake_says_what_is_allowed_and_what_was_given(value: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _Sample.model_validate(value)
    assert [str(p) for p in from_validation_error(caught.value)] == [expected]


def test_a_range_keeps_both_bounds_in_the_json_schema() -> None:
    vlan = _Sample.model_json_schema()["properties"]["vlan"]["anyOf"][0]
    assert (vlan["minimum"], vlan["maximum"]) == (1, 4094)


def test_counts_are_said_with_the_right_plural() -> None:
    assert [counted(n, "problem") for n in (0, 1, 2)] == ["0 problems", "1 problem", "2 problems"]


_ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(sorted(Request.model_fields)),
    value=_ANY_VALUE,
    inner=st.sampled_from(["", "cores", "swap", "mode", "vlan", "address", "domain", "port", "health", "expose"]),
)
def test_no_request_mistake_reads_like_the_library(field: str, value: object, inner: str) -> None:
    if inner and field in ("resources", "network", "service"):
        base = yaml.safe_load(request_yaml("w")).get(field) or {}
        value = {**base, inner: value}
    file = RequestFile("requests/w.yaml", "w", request_yaml("w", **{field: value}).encode())
    _, invalid = validate([file], PROFILES, SITE)
    for problem in (str(p) for i in invalid for p in i.problems):
        assert not any(words in problem for words in ("should", "Input", "pattern", "^[")), problem
