"""`reconciler plan`'s output (pure): what a pass would do, for people and as one JSON document.

One line per change, each led by a sign that says its kind, sorted by request:

    + create   ~ update / ~ resize   > migrate   ^ start   v stop   - destroy   * adopt   = setup   @ find address
    ! refuse   ! fail   ? orphan   x invalid

then what the mass-change guard holds back, the files the pass would change in the repository, and a summary.
A change is an action (a job) or a file to write or remove; refusals, orphans and invalid requests are said
but change nothing by themselves.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.model.action import (
    Action,
    AdoptContainer,
    ChangeRecords,
    CloneVm,
    CreateContainer,
    DestroyContainer,
    FindAddress,
    MigrateContainer,
    Provision,
    StartContainer,
    StopContainer,
    UpdateContainer,
)
from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase, RecordOp, Transport
from reconciler.parse import counted, load_yaml
from reconciler.report import caddy
from reconciler.report.steps import setup_lines

INDENT = "    "
# The kinds of action the JSON's summary counts, in its order.
KINDS = ("create", "update", "destroy", "resize", "migrate", "start", "stop", "adopt", "setup", "find-address", "dns")
NOTES = ("refused", "failing", "orphaned", "invalid")


@dataclass(frozen=True)
class PlanView:
    """What one read-only pass found, as the renderers read it.

    files: the generated files the pass would write (text) or remove (None); caddy_files: the Caddy service
    files there now, by path, under caddy_dir. requests_from: where the request files came from when not from
    branch itself (another branch or a directory), said in the header.
    """

    branch: str
    revision: str | None
    request_count: int
    actions: Sequence[Action]
    standings: Mapping[str, Standing]
    files: Mapping[str, str | None]
    caddy_files: Mapping[str, bytes]
    caddy_dir: str
    transport: Transport
    held: str | None = None  # the mass-change guard's reason, when it held something back
    requests_from: str | None = None
    requests_revision: str | None = None
    history: bool = True  # whether the job history was read
    site_file: str | None = None  # the site file's path (paths.site): said as itself, not as a status
    hosts_file: str | None = None  # dns.hosts_file
    targets_dir: str | None = None  # prometheus.targets


def kind_of(action: Action) -> str:
    """The action's word in the summary and the JSON: its job type, but `resize` for an update of the disk
    alone, `setup` for a provision and `create` for a VM's clone."""
    if isinstance(action, CloneVm):
        return "create"
    if isinstance(action, UpdateContainer) and not action.changes:
        return "resize"
    if isinstance(action, Provision):
        return "setup"
    return str(action.job_type)


def counts(view: PlanView) -> Counter[str]:
    """How many of each kind of change (an update that also grows the disk counts as both), and of each note."""
    out: Counter[str] = Counter()
    for action in view.actions:
        if isinstance(action, UpdateContainer):
            out["update"] += bool(action.changes)
            out["resize"] += action.grow_to is not None
        else:
            out[kind_of(action)] += 1
    for standing in view.standings.values():
        note = _note(standing)
        if note is not None:
            out[note] += 1
    return out


def held_back(view: PlanView) -> list[str]:
    """The requests whose destroy, stop or orphaning the mass-change guard holds back: they say its reason."""
    return sorted(n for n, s in view.standings.items() if view.held is not None and s.message == view.held)


def changes(view: PlanView) -> bool:
    """Whether the pass would change anything: an action to start, or a file to write or remove."""
    return bool(view.actions or view.files)


# For people


def render_text(view: PlanView) -> str:
    lines = [_header(view), ""]
    entries = _entries(view)
    lines += entries or ["No action to start."]
    if view.held is not None:
        lines += ["", view.held, f"{INDENT}held back: {', '.join(held_back(view))}"]
    lines.append("")
    if view.files:
        lines.append(f"Files to change in the repository ({view.branch}):")
        lines += [f"  {path}: {_file_note(view, path, text)}" for path, text in sorted(view.files.items())]
    else:
        lines.append(f"No file to change in the repository ({view.branch}).")
    lines += ["", summary(view)]
    return "\n".join(lines) + "\n"


# The summary line counts as terraform does: what the pass would create, change and destroy. A change is any
# other action on a container that exists and stays: update (its settings, its disk, or both: one job),
# migrate, start, stop, adopt, setup and find-address. So create + change + destroy is the number of jobs
# the pass would start. The kinds of change follow in brackets (an update that also grows the disk is named
# both update and resize there); refusals and the like change nothing, and are named after.
CHANGE_KINDS = KINDS[3:]


def changed(view: PlanView) -> int:
    """How many actions would change a container in place: neither a create nor a destroy."""
    return sum(kind_of(a) not in ("create", "destroy") for a in view.actions)


def summary(view: PlanView) -> str:
    """`Plan: 1 to create, 2 to change, 0 to destroy (1 update, 1 start); 1 refused; 3 files to change.`"""
    found = counts(view)
    notes = ", ".join(f"{found[n]} {n}" for n in NOTES if found[n])
    held = "; some held by the mass-change guard" if view.held is not None else ""
    if not changes(view):
        return f"Plan: nothing to change{f' ({notes})' if notes else ''}{held}."
    kinds = ", ".join(f"{found[k]} {k}" for k in ("update", *CHANGE_KINDS) if found[k])
    named = f"{found['create']} to create, {changed(view)} to change, {found['destroy']} to destroy"
    parts = [named + (f" ({kinds})" if kinds else "")]
    parts += [*([notes] if notes else []), f"{counted(len(view.files), 'file')} to change"]
    return "Plan: " + "; ".join(parts) + held + "."


def _short(revision: str | None) -> str:
    return revision[:12] if revision else "(no commit yet)"


def _header(view: PlanView) -> str:
    base = f"{view.branch} at {_short(view.revision)}"
    history = "" if view.history else "; without the job history"
    if view.requests_from is None:
        return f"Planning {base}: {counted(view.request_count, 'request file')}{history}."
    source = view.requests_from
    if view.requests_revision is not None:
        source += f" at {_short(view.requests_revision)}"
    return (
        f"Planning the {counted(view.request_count, 'request file')} of {source} against the status and Caddy files of"
        f" {base}{history}."
    )


def _note(standing: Standing) -> str | None:
    """What a request without an action shows: refused, failing, orphaned or invalid (None: nothing to say)."""
    if standing.phase == Phase.FAILED:
        return "refused" if standing.refused else "failing"
    if standing.phase == Phase.ORPHANED:
        return "orphaned"
    if standing.phase == Phase.INVALID:
        return "invalid"
    return None


def _where(vmid: int | None, node: str | None) -> str:
    return f"lxc {vmid} on {node}" if vmid is not None else "no container"


def _entries(view: PlanView) -> list[str]:
    blocks: list[tuple[str, list[str]]] = []
    acting = set()
    for action in view.actions:
        acting.add(action.name)
        blocks.append((action.name, _action_lines(action, view.transport)))
    for name, standing in view.standings.items():
        if name not in acting and (lines := _standing_lines(standing)):
            blocks.append((name, lines))
    return [line for _, lines in sorted(blocks, key=lambda b: b[0]) for line in lines]


def _action_lines(action: Action, transport: Transport) -> list[str]:
    where = f"{action.guest} on {action.node}" if not isinstance(action, ChangeRecords) else ""
    match action:
        case CreateContainer() | CloneVm():
            return [f"+ {action.describe()}", *setup_lines(action.desired.setup, transport, INDENT)]
        case UpdateContainer():
            out = []
            if action.changes:
                edits = action.lines()[: len(action.changes)]  # the disk's line comes last: said on its own below
                corrects = set(action.corrects)
                out.append(f"~ update {action.name}: {where}")
                out += [
                    INDENT + line + (" (puts back a change made by hand)" if change.field in corrects else "")
                    for line, change in zip(edits, action.changes, strict=True)
                ]
            if action.grow_to is not None:
                out.append(f"~ resize {action.name}: {where}: {action.disk} -> {action.grow_to} GB")
            if action.next_boot:
                out.append(f"{INDENT}(cloud-init changes take effect at the VM's next boot)")
            return out
        case MigrateContainer():
            return [f"> {action.describe()}"]
        case StartContainer():
            return [f"^ {action.describe()}"]
        case StopContainer():
            return [f"v {action.describe()}"]
        case DestroyContainer():
            return [f"- {action.describe()}"]
        case AdoptContainer():
            return [f"* {action.describe()}"]
        case Provision():
            steps = setup_lines(action.desired.setup, transport, INDENT)[1:]  # its head says "then": said here
            return [f"= setup {action.name}: {where}, through pct ({transport}):", *steps]
        case FindAddress():
            return [f"@ {action.describe()}"]
        case ChangeRecords():
            marks = {RecordOp.CREATE: "+", RecordOp.CHANGE: "~", RecordOp.DELETE: "-"}
            return [f"= DNS records of {action.name}:", *(f"{INDENT}{marks[c.op]} {c}" for c in action.changes)]


def _standing_lines(standing: Standing) -> list[str]:
    name = standing.name
    match _note(standing):
        case "refused":
            return [
                f"! refuse {name}: {_where(standing.vmid, standing.node)} is kept as it is:",
                *(f"{INDENT}{r}" for r in standing.refused),
            ]
        case "failing":
            return [f"! fail {name}: {standing.message}"]
        case "orphaned":
            return [f"? orphan {name}: {standing.message}"]
        case "invalid":
            return [f"x invalid {name}: {standing.request}", *(f"{INDENT}{p}" for p in standing.problems)]
    return []


def _is_caddy(view: PlanView, path: str) -> bool:
    return path.startswith(view.caddy_dir.rstrip("/") + "/")


def _service(text: str | bytes | None) -> tuple[str | None, str | None]:
    """A Caddy service file's domain and backend, where it says them."""
    if text is None:
        return None, None
    try:
        doc = load_yaml(text)
    except ValueError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    domain, backend = doc.get("domain"), doc.get("backend")
    return (str(domain) if domain else None), (str(backend) if backend else None)


def _file_change(view: PlanView, path: str, text: str | None) -> dict[str, object]:
    """One file change as the JSON says it: its kind, what happens, and for a Caddy file its route."""
    if path == view.site_file:
        return {"path": path, "kind": "site", "change": "write" if text is not None else "remove"}
    if path == view.hosts_file:
        return {"path": path, "kind": "hosts", "change": "write" if text is not None else "remove"}
    if view.targets_dir is not None and path.startswith(view.targets_dir.rstrip("/") + "/"):
        return {"path": path, "kind": "target", "change": "write" if text is not None else "remove"}
    if not _is_caddy(view, path):
        return {"path": path, "kind": "status", "change": "write" if text is not None else "remove"}
    before = view.caddy_files.get(path)
    domain, backend = _service(text if text is not None else before)
    change = "remove" if text is None else "change" if before is not None else "create"
    owner = caddy.owner(before) if before is not None else None
    out: dict[str, object] = {"path": path, "kind": "caddy", "change": change, "domain": domain}
    if text is not None:
        out["backend"] = backend
    else:
        out["request"] = owner
    return out


def _file_note(view: PlanView, path: str, text: str | None) -> str:
    item = _file_change(view, path, text)
    change, domain = item["change"], item.get("domain") or path.rsplit("/", 1)[-1].removesuffix(".yaml")
    if item["kind"] == "site":
        return "site file written" if change == "write" else "site file removed"
    if item["kind"] == "hosts":
        return "hosts file written" if change == "write" else "hosts file removed"
    if item["kind"] == "status":
        return "status written" if change == "write" else "status removed"
    if item["kind"] == "target":
        return "scrape target written" if change == "write" else "scrape target removed: Prometheus stops scraping it"
    if change == "remove":
        return f"Caddy file removed: takes the route of the live site {domain} away"
    backend = f" to {item['backend']}" if item.get("backend") else ""
    return f"Caddy file {'created' if change == 'create' else 'changed'}: routes {domain}{backend}"


# As JSON


def document(view: PlanView) -> dict[str, object]:
    """The whole plan as one JSON-ready document (requests sorted by name, files by path)."""
    found = counts(view)
    by_name = sorted(view.standings.items())
    return {
        "branch": view.branch,
        "revision": view.revision,
        "requests_from": view.requests_from,
        "requests_revision": view.requests_revision,
        "request_files": view.request_count,
        "job_history": view.history,
        "actions": [
            {
                "request": a.name,
                "action": kind_of(a),
                "vmid": a.vmid,
                "node": a.node,
                "description": a.describe(),
                "details": a.details(),
            }
            for a in sorted(view.actions, key=lambda a: a.name)
        ],
        "refusals": [
            {
                "request": n,
                "vmid": s.vmid,
                "node": s.node,
                "refused": [{"field": r.field, "asked": r.asked, "kept": r.kept} for r in s.refused],
            }
            for n, s in by_name
            if _note(s) == "refused"
        ],
        "failing": [{"request": n, "vmid": s.vmid, "message": s.message} for n, s in by_name if _note(s) == "failing"],
        "orphans": [
            {"request": n, "vmid": s.vmid, "node": s.node, "message": s.message}
            for n, s in by_name
            if _note(s) == "orphaned"
        ],
        "invalid": [
            {"request": n, "path": s.request, "problems": list(s.problems)} for n, s in by_name if _note(s) == "invalid"
        ],
        "files": [_file_change(view, path, text) for path, text in sorted(view.files.items())],
        "held": {"reason": view.held, "requests": held_back(view)} if view.held is not None else None,
        "summary": {
            **{k: found[k] for k in KINDS},
            "change": changed(view),
            **{n: found[n] for n in NOTES},
            "files": len(view.files),
            "changes": changes(view),
            "text": summary(view),
        },
    }


def render_json(view: PlanView) -> str:
    return json.dumps(document(view), indent=2) + "\n"
