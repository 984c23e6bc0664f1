"""examples/config.yaml and the README's config blocks stay in step with reconciler/config.py.

The example holds every key of every config model, in the model's order, each with a comment that says its
default ("default: X", "(required)", or "(optional)" for a block whose keys all have defaults); a key the code
no longer reads, or a new one the example lacks, fails here.
"""

from __future__ import annotations

import re
import types
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from reconciler.config import Config, Range, load_config
from reconciler.model.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "config.yaml"
README = (ROOT / "README.md").read_text()
LIST_MODELS = (Range,)  # written as a [low, high] list, not as a mapping of their fields


def _model(tp: Any) -> type[BaseModel] | None:
    """The config model inside an annotation (X, X | None, Annotated[X, ...]), if there is one."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if get_origin(tp) in (Union, types.UnionType, Annotated):
        return next((m for m in map(_model, get_args(tp)) if m is not None), None)
    return None


def _dict_values(tp: Any) -> Any | None:
    """The value type of a dict annotation (dict[K, V], possibly optional), or None when it is no dict."""
    if get_origin(tp) is dict:
        return get_args(tp)[1]
    if get_origin(tp) in (Union, types.UnionType, Annotated):
        return next((v for v in map(_dict_values, get_args(tp)) if v is not None), None)
    return None


def _shown(value: object) -> str:
    """A default as the example's comments write it."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _wanted(field: FieldInfo) -> str:
    """What the comment of a field's key must say of its default (a regular expression)."""
    if field.is_required():
        return r"\(required\)"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return r"\(optional\)"
    return rf"default: {re.escape(_shown(default))}(?![\w.])"


class Checker:
    """Walks the example's YAML nodes beside the config models, collecting every problem as a line."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.problems: list[str] = []

    def comment(self, key: yaml.Node, value: yaml.Node) -> str | None:
        line = self.lines[key.start_mark.line]
        # A block's value starts on the next line: its comment follows the key. A scalar's or a flow collection's
        # follows the value (which may hold no '#').
        same_line = value.end_mark.line == key.start_mark.line and not isinstance(value, yaml.MappingNode)
        rest = line[value.end_mark.column if same_line else key.end_mark.column :]
        found = rest.find("#")
        return rest[found + 1 :].strip() if found >= 0 else None

    def model(self, model: type[BaseModel], node: yaml.Node, path: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            self.problems.append(f"{path or 'the file'}: not a mapping")
            return
        fields = list(model.model_fields)
        seen: list[str] = []
        for key, value in node.value:
            name = str(key.value)
            where = f"{path}.{name}" if path else name
            if name not in model.model_fields:
                self.problems.append(f"{where}: the code has no such key (the example keeps a dropped key)")
                continue
            seen.append(name)
            field = model.model_fields[name]
            comment = self.comment(key, value)
            if not comment:
                self.problems.append(f"{where}: no comment")
            elif not re.search(_wanted(field), comment):
                self.problems.append(f"{where}: the comment does not say {_wanted(field)!r}: {comment!r}")
            self.value(field.annotation, value, where)
        for name in fields:
            if name not in seen:
                where = f"{path}.{name}" if path else name
                self.problems.append(f"{where}: missing from the example")
        if seen != sorted(seen, key=fields.index):
            self.problems.append(f"{path or 'the file'}: keys {seen} are not in the model's order {fields}")

    def value(self, annotation: Any, node: yaml.Node, path: str) -> None:
        model = _model(annotation)
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return  # an optional block left at its default, None
        if model is not None and issubclass(model, LIST_MODELS):
            if not (isinstance(node, yaml.SequenceNode) and len(node.value) == 2):
                self.problems.append(f"{path}: not a [low, high] list")
        elif model is not None:
            self.model(model, node, path)
        elif (values := _dict_values(annotation)) is not None and isinstance(node, yaml.MappingNode):
            # Entries named by the operator (a bridge, a template, a node): each says what it is, and a model
            # entry holds every field of its model.
            for key, value in node.value:
                where = f"{path}.{key.value}"
                if not self.comment(key, value):
                    self.problems.append(f"{where}: no comment")
                self.value(values, value, where)


def problems_of(text: str) -> list[str]:
    checker = Checker(text)
    checker.model(Config, yaml.compose(text), "")
    return checker.problems


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.proxmox.token_id == "reconciler@pve!gitops"
    assert config.provision.ssh is not None and config.provision.ssh.hosts["pve1"] == "192.168.1.11"


def test_the_example_holds_every_key_of_every_model_in_order_each_with_a_comment_and_its_default() -> None:
    assert problems_of(EXAMPLE.read_text()) == []


def test_the_check_catches_a_dropped_key_a_missing_key_a_missing_comment_a_wrong_default_and_the_order(
    tmp_path: Path,
) -> None:
    text = EXAMPLE.read_text()
    dropped = re.sub(r"(\n  port: 8006.*)", r"\1\n  token_secret: abc  # a key the code dropped", text, count=1)
    assert problems_of(dropped) == ["proxmox.token_secret: the code has no such key (the example keeps a dropped key)"]
    (tmp_path / "dropped.yaml").write_text(dropped)
    with pytest.raises(ConfigError, match=re.escape("proxmox.token_secret: unknown key")):
        load_config(tmp_path / "dropped.yaml")
    missing = re.sub(r"\n  busy_timeout: .*", "", text)
    assert problems_of(missing) == ["state.busy_timeout: missing from the example"]
    bare = re.sub(r"(\n    known_hosts: \S+)\s+#.*", r"\1", text)
    assert problems_of(bare) == ["provision.ssh.known_hosts: no comment"]
    wrong = text.replace("default: 600", "default: 60")
    assert [p.split(":")[0] for p in problems_of(wrong)] == ["proxmox.task_timeout"]
    lines = text.splitlines(keepends=True)
    branch = next(n for n, line in enumerate(lines) if line.startswith("  branch:"))
    lines.insert(branch + 3, lines.pop(branch))  # after author and username
    [order] = problems_of("".join(lines))
    assert order.startswith("git: keys ['remote', 'checkout', 'author', 'username', 'branch'")


def _config_blocks() -> list[Any]:
    """The README's ```yaml blocks that are a config or a part of one (top-level keys all config sections)."""
    blocks = []
    for found in re.finditer(r"```ya?ml\n(.*?)```", README, re.S):
        doc = yaml.safe_load(found.group(1))
        if isinstance(doc, dict) and doc and set(doc) <= set(Config.model_fields):
            line = README[: found.start()].count("\n") + 1
            blocks.append(pytest.param(line, doc, id=f"README line {line}"))
    return blocks


@pytest.mark.parametrize(("line", "doc"), _config_blocks())
def test_each_config_block_in_the_readme_loads(tmp_path: Path, line: int, doc: dict[str, Any]) -> None:
    # A whole config (git: and proxmox:) loads as it is; a part of one in place of the example's sections.
    whole = {"git", "proxmox"} <= set(doc)
    config = doc if whole else {**yaml.safe_load(EXAMPLE.read_text()), **doc}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    for section in doc:
        assert getattr(loaded, section) is not None, f"README line {line}: {section}"
