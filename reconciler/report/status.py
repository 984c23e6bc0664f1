"""Status files, `status/<name>.yaml`: where each request stands, in Git beside it.

Their content is a pure function of the standing, never of the clock, so a cycle that changes nothing
writes nothing and commits nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass, replace

from reconciler.model.standing import DnsPart, Drift, Refusal, Standing
from reconciler.model.vocab import DnsState, Phase, SetupState
from reconciler.parse import dump_yaml, load_yaml, one_line

MARK = b"# Written by reconciler"
HEADER = "# Written by reconciler for {path}; the next cycle overwrites edits.\n"


@functools.lru_cache(maxsize=8192)
def render(standing: Standing) -> str:
    """The status file's text (cached: a pass renders every status, and most are unchanged)."""
    doc: dict[str, object] = {"apiVersion": "reconciler/v1", "kind": "Status", **asdict(standing)}
    doc["phase"] = str(standing.phase)
    doc["setup"] = str(standing.setup) if standing.setup is not None else None
    if standing.dns is None:
        del doc["dns"]
    else:
        doc["dns"] = _dns_doc(standing.dns)
    for key, items in (
        ("problems", standing.problems),
        ("output", standing.output),
        ("drift", standing.drift),
        ("refused", standing.refused),
    ):
        if items:  # lists only where there is something to say
            doc[key] = [asdict(i) if is_dataclass(i) else i for i in items]
        else:
            del doc[key]
    if not standing.flapping:
        del doc["flapping"]
    # A file name may hold a line break: escaped, it cannot add a line (or a key) to the file.
    return HEADER.format(path=one_line(standing.request)) + dump_yaml(doc)


@functools.lru_cache(maxsize=8192)
def parse(text: bytes) -> Standing | None:
    """A status file the reconciler wrote, or None for anything else (cached: most are unchanged).

    Anyone with push access can edit it: it is read with load_yaml's caps, and every value must have the type
    render() writes, or the whole file is ignored (a list where a name belongs would break the next render).
    """
    if not is_generated(text):
        return None
    try:
        doc = load_yaml(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    fields = {k: v for k, v in doc.items() if k in Standing.__dataclass_fields__}
    if not all(_FIELD_TYPES[key](value) for key, value in fields.items()):
        return None
    for key in ("problems", "output"):
        if key in fields:
            fields[key] = tuple(fields[key])
    for key, kind in (("drift", Drift), ("refused", Refusal)):
        if key in fields:
            fields[key] = tuple(kind(**item) for item in fields[key])
    try:
        if fields.get("dns") is not None:
            part = fields["dns"]
            fields["dns"] = DnsPart(DnsState(part["state"]), tuple(part.get("records", ())), part.get("message", ""))
        fields["phase"] = Phase(str(fields.get("phase")))
        if fields.get("setup") is not None:
            fields["setup"] = SetupState(fields["setup"])
        return Standing(**fields)
    except (TypeError, ValueError):
        return None


def _text(value: object) -> bool:
    return isinstance(value, str)


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _texts(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _records(*keys: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        return isinstance(value, list) and all(
            isinstance(item, dict) and sorted(item) == sorted(keys) and all(isinstance(v, str) for v in item.values())
            for item in value
        )

    return check


_FIELD_TYPES: dict[str, Callable[[object], bool]] = {
    "name": _text,
    "request": _text,
    "phase": _text,
    "message": _text,
    "revision": _optional(_text),
    "vmid": _optional(_number),
    "node": _optional(_text),
    "address": _optional(_text),
    "service": _optional(_text),
    "job": _optional(_number),
    "problems": _texts,
    "applied": _optional(lambda v: isinstance(v, bool)),
    "healthy": _optional(lambda v: isinstance(v, bool)),
    "setup": _optional(_text),
    "output": _texts,
    "drift": _records("field", "desired", "observed"),
    "refused": _records("field", "asked", "kept"),
    "flapping": lambda v: isinstance(v, bool),
    "dns": _optional(
        lambda v: (
            isinstance(v, dict)
            and set(v) <= {"state", "records", "message"}
            and isinstance(v.get("state"), str)
            and _texts(v.get("records", []))
            and isinstance(v.get("message", ""), str)
        )
    ),
}


def _dns_doc(part: DnsPart) -> dict[str, object]:
    """The status file's `dns:` block: state, then the records and a message where there are some."""
    doc: dict[str, object] = {"state": str(part.state)}
    if part.records:
        doc["records"] = list(part.records)
    if part.message:
        doc["message"] = part.message
    return doc


def domain(standing: Standing) -> str | None:
    """The domain of the request's Caddy file (named after its domain), or None when it is not exposed."""
    if standing.service is None:
        return None
    return standing.service.rsplit("/", 1)[-1].removesuffix(".yaml")


def document(standing: Standing) -> dict[str, object]:
    """A request's entry in the JSON/YAML output of `status` and `reconcile` (documented in the README: keep it
    stable; every key is always there, null when not known)."""
    return {
        "name": standing.name,
        "request": standing.request,
        "phase": str(standing.phase),
        "healthy": standing.healthy,
        "vmid": standing.vmid,
        "node": standing.node,
        "address": standing.address,
        "domain": domain(standing),
        "drift": [{"field": d.field, "desired": d.desired, "observed": d.observed} for d in standing.drift],
        "job": standing.job,
        "message": standing.message,
        "problems": list(standing.problems),
        "dns": _dns_doc(standing.dns) if standing.dns is not None else None,
    }


def is_generated(text: bytes) -> bool:
    return text.startswith(MARK)


@dataclass
class Statuses:
    """Every request's status, and the refused ones that still need a `validate` job to explain them."""

    by_name: dict[str, Standing] = field(default_factory=dict)
    to_record: list[str] = field(default_factory=list)


def compute(
    standings: Mapping[str, Standing],
    previous: Mapping[str, Standing],
    started: Mapping[str, int],
    deferred: Mapping[str, str],
    services: Mapping[str, str],
    last_jobs: Mapping[str, int],
) -> Statuses:
    """The status of every request from the plan's standings (pure).

    started: request -> the job just queued for it. deferred: request -> what it waits to do (an action the
    runner did not take, as during a shutdown): it keeps the status it had. services: request -> its Caddy
    file. An unchanged status keeps the job that first reported it, so nothing is committed again.
    """
    out = Statuses()
    for name, standing in standings.items():
        old = previous.get(name)
        if name in deferred:
            out.by_name[name] = old or replace(standing, phase=Phase.PENDING, message=f"waiting to {deferred[name]}")
            continue
        if standing.phase == Phase.ORPHANED and old is not None:
            standing = replace(standing, request=old.request)  # the path of the file that was removed
        new = replace(standing, service=services.get(name), job=started.get(name, standing.job))
        if old is not None and new.same_as(old):
            out.by_name[name] = old
            continue
        if new.job is None and new.phase == Phase.INVALID:
            out.to_record.append(name)
        elif new.job is None:
            new = replace(new, job=last_jobs.get(name))
        out.by_name[name] = new
    return out
