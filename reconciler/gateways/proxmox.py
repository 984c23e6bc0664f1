"""The only module that talks to Proxmox VE (through proxmoxer); callers get typed objects and ProxmoxError."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException
from urllib3.exceptions import ProtocolError

from reconciler.config import TOKEN_SECRET_ENV, ProxmoxConfig
from reconciler.gateways.proxmox_body import ParamValue
from reconciler.model.errors import ProxmoxError
from reconciler.model.guest import GuestConfig
from reconciler.model.observed import Guest, Interface
from reconciler.model.vocab import GuestStatus

# proxmoxer logs request bodies at INFO, and a create body may carry secrets one day: keep it quiet.
for _name in ("proxmoxer", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# The privileges the reconciler's API token needs, on /: the README's `pveum role add` lists exactly these,
# and the tests and the demo grant exactly these, with permission checks on; tests/test_privileges.py shows
# each one is needed. Datastore.Audit is not: reading the template needs it or Datastore.AllocateSpace.
REQUIRED_PRIVILEGES = (
    "Datastore.AllocateSpace",
    "SDN.Use",
    "VM.Allocate",
    "VM.Audit",
    "VM.Clone",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.GuestAgent.Audit",
    "VM.Migrate",
    "VM.PowerMgmt",
)
# What a VM's guest agent answers while the guest is still booting (or its agent is stuck): not yet, not an error.
_AGENT_NOT_YET = re.compile(r"guest agent is not running|got timeout|VM \d+ is not running")

RequestHook = Callable[[str, str], None]  # (HTTP method, status code or 'error')
Abort = Callable[[], str | None]  # a reason to stop waiting, or None to go on


@dataclass(frozen=True)
class TaskResult:
    """How a Proxmox task ended."""

    upid: str
    exitstatus: str
    warnings: tuple[str, ...] = ()  # the WARN lines of its log when it ended with "WARNINGS: N"


class TaskFailed(ProxmoxError):
    """A task ended in an error: its exit status, and the tail of its log to put in the job log."""

    def __init__(self, step: str, upid: str, exitstatus: str, log: tuple[str, ...]) -> None:
        # A task's failure (storage busy, a lock, a node short of space) may pass; it is retried with backoff.
        super().__init__(step, exitstatus, None, temporary=True)
        self.upid = upid
        self.log = log


class ConfigChanged(ProxmoxError):
    """The digest sent was stale: someone changed the container since it was read."""

    def __init__(self, step: str, status: int | None) -> None:
        reason = "the container's config changed since it was read; it is read again and planned again"
        super().__init__(step, reason, status, temporary=True)


class VmidTaken(ProxmoxError):
    """The VMID asked for is used by another guest (reason is Proxmox's text, naming the node)."""

    def __init__(self, step: str, reason: str, status: int | None) -> None:
        # Another client took the id between nextid and create: a new id is picked on the next try.
        super().__init__(step, reason, status, temporary=True)


class Locked(ProxmoxError):
    """The guest holds a lock (backup, snapshot, migrate, ...) that refuses the change for now."""

    def __init__(self, step: str, what: str, status: int | None) -> None:
        reason = f"container is locked ({what}): a backup, snapshot or migration is running; tried again later"
        super().__init__(step, reason, status, temporary=True)
        self.what = what


_CONFIG_CHANGED = "detected modified configuration"
# PVE's refusal names the path and the privilege ("A|B": any one of them) when its check says which.
_PERMISSION = re.compile(r"Permission check failed \(([^,()]*), ([A-Za-z.|]+)\)")
_VMID_TAKEN = re.compile(r"\b(?:CT|VM) \d+ already exists")
_LOCKED = re.compile(r"\b(?:CT|VM) is locked \(([^)]+)\)")
# 500s that stay until someone changes something in Proxmox: retrying them only hides the refusal.
_PERMANENT = ("protection mode enabled", "unable to shrink disk size")


def _error(step: str, reason: str, status: int | None, node: str | None, needs: str | None = None) -> ProxmoxError:
    """The named error for Proxmox's message, else a ProxmoxError whose temporary follows the status.

    needs names the privilege and path the call needs, for a refusal in which Proxmox names none."""
    if status == 403:
        return ProxmoxError(step, _refused(reason, needs), status, temporary=False)
    if _CONFIG_CHANGED in reason:
        return ConfigChanged(step, status)
    if _VMID_TAKEN.search(reason):
        return VmidTaken(step, reason, status)
    if locked := _LOCKED.search(reason):
        return Locked(step, locked.group(1), status)
    if status == 401:
        # A token never logs in, so a 401 is the token itself: waiting will not bring it back.
        reason = (
            f"the API token was refused (expired, revoked or a wrong secret): check {TOKEN_SECRET_ENV}, "
            "proxmox.token_id in the config, and the token in Proxmox"
        )
        return ProxmoxError(step, reason, status, temporary=False)
    if status == 595:
        # pveproxy's own status when it cannot forward the call to the node that owns the guest.
        where = f"node {node}" if node else "the node"
        reason = f"{where} is offline or cut off from the API host ({reason})"
        return ProxmoxError(step, reason, status, temporary=True)
    if any(text in reason for text in _PERMANENT):
        return ProxmoxError(step, reason, status, temporary=False)
    return ProxmoxError(step, reason, status, temporary=_temporary(status))


def _refused(reason: str, needs: str | None) -> str:
    """A 403 in plain words: the privilege the token lacks and on which path, when Proxmox (or the call) says."""
    found = _PERMISSION.search(reason)
    if found is not None:
        path, privileges = found.group(1) or "(a path Proxmox did not name)", found.group(2).replace("|", " or ")
        return f"Proxmox refused: the API token lacks {privileges} on {path} (see the README's Reconciler role)"
    if reason.strip() == "Permission check failed" and needs is not None:
        return f"Proxmox refused: the API token lacks {needs} (see the README's Reconciler role)"
    return f"Proxmox refused: {reason}"


def _covers(where: str, path: str) -> bool:
    """Whether privileges on the ACL path where reach path (they propagate down the tree)."""
    return where in ("/", path) or path.startswith(where.rstrip("/") + "/")


def _temporary(status: int | None) -> bool:
    """Whether a failed call may pass by itself: no answer or a server-side error (5xx: locks, busy storage)
    may; a refusal of the request itself (4xx: a bad parameter, a refused permission or token) will not."""
    return status is None or status >= 500


def _reason(exc: Exception) -> tuple[str, int | None]:
    """Proxmox's own message for a failed call, with per-field errors of a 400."""
    if isinstance(exc, ResourceException):
        text = str(exc.content or exc.status_message).strip()
        if exc.errors:
            text += " " + "; ".join(f"{k}: {v}" for k, v in sorted(dict(exc.errors).items()))
        return text, int(exc.status_code)
    # Below, the library's own text is never passed on: it may quote a header (the token) or a URL.
    if isinstance(exc, AuthenticationError):
        return "authentication failed", 401
    if isinstance(exc, requests.exceptions.Timeout):
        return "Proxmox did not answer in time", None
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification of the Proxmox API failed (check proxmox.ca_file)", None
    if _dropped(exc):
        return "the connection to the Proxmox API was dropped before an answer", None
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect to the Proxmox API", None
    return f"the call failed before Proxmox answered ({type(exc).__name__})", None


BAD_HEADER = (
    f"the API token cannot be sent: it holds a character an HTTP header may not (check {TOKEN_SECRET_ENV}"
    " for a carriage return or a newline)"
)


def _bad_header(exc: Exception) -> bool:
    """Whether the request could not be sent for a header value (the token) holding a CR, LF or NUL: requests
    raises InvalidHeader, http.client a plain ValueError; both quote the whole header."""
    return isinstance(exc, requests.exceptions.InvalidHeader) or (
        type(exc) is ValueError and str(exc).startswith("Invalid header")
    )


def _dropped(exc: Exception) -> bool:
    """Whether the API took the connection and then closed it unanswered (a proxy, a firewall, a restart)."""
    return isinstance(exc, requests.exceptions.ConnectionError) and any(isinstance(a, ProtocolError) for a in exc.args)


def _split_tags(raw: object) -> tuple[str, ...]:
    return tuple(t for t in str(raw or "").replace(",", ";").replace(" ", ";").split(";") if t)


T = TypeVar("T")


def _wait(
    step: str,
    timeout: float,
    abort: Abort | None,
    look: Callable[[], tuple[bool, T]],
    still: Callable[[T], str],
    meanwhile: str | None = None,
) -> T:
    """Call look until it says done (its value then), backing off from 10 ms to 1 s; a temporary ProxmoxError
    saying what is still so after timeout seconds, or when abort gives a reason to stop waiting (what goes on
    meanwhile appended, else what is still so)."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        done, value = look()
        if done:
            return value
        if time.monotonic() >= deadline:
            raise ProxmoxError(step, f"{still(value)} after {timeout:g} s", temporary=True)
        reason = abort() if abort else None
        if reason:
            tail = meanwhile if meanwhile is not None else still(value)
            raise ProxmoxError(step, f"{reason}; {tail}", temporary=True)
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 1.0)


def _guest(api: Any, node: str, kind: str, vmid: int) -> Any:
    """The API path of one guest: /nodes/{node}/lxc/{vmid} or /nodes/{node}/qemu/{vmid}."""
    return getattr(api.nodes(node), kind)(vmid)


def _word(kind: str) -> str:
    return "VM" if kind == "qemu" else "container"


class Proxmox:
    """A typed client for the few Proxmox calls the reconciler makes; safe to use from several threads."""

    def __init__(self, config: ProxmoxConfig, secret: str, on_request: RequestHook | None = None) -> None:
        self._config = config
        self._secret = secret
        self._local = threading.local()
        self._on_request = on_request or (lambda method, status: None)

    def _api(self) -> Any:
        # requests.Session is not thread-safe: one client per thread (token auth needs no login).
        api = getattr(self._local, "api", None)
        if api is None:
            user, _, token = self._config.token_id.partition("!")
            verify: bool | str = self._config.verify_ssl
            if verify and self._config.ca_file is not None:
                verify = str(self._config.ca_file)
            api = ProxmoxAPI(
                self._config.host,
                port=self._config.port,
                user=user,
                token_name=token,
                token_value=self._secret,
                verify_ssl=verify,
                timeout=self._config.timeout,
                service="PVE",
            )
            self._local.api = api
        return api

    def _call(
        self, step: str, method: str, fn: Callable[[Any], Any], node: str | None = None, needs: str | None = None
    ) -> Any:
        """One API call; a failure becomes a ProxmoxError (or a named subclass) saying why.

        node, when the call is about one, is named if Proxmox cannot reach it; needs names the privilege and
        path the call needs, for a refusal in which Proxmox names none."""
        try:
            result = fn(self._api())
        except (ResourceException, AuthenticationError, requests.exceptions.RequestException, ValueError) as exc:
            if _bad_header(exc):  # waiting will not mend the secret
                self._on_request(method, "error")
                raise ProxmoxError(step, BAD_HEADER, None, temporary=False) from None
            if type(exc) is ValueError:  # not a failed call but a bug: said as one, by the caller
                raise
            reason, status = _reason(exc)
            if status is None:
                reason += f" at {self._config.host}:{self._config.port}"
                if method != "GET" and _dropped(exc):
                    reason += "; the change may or may not have been made"
            self._on_request(method, str(status) if status else "error")
            raise _error(step, reason, status, node, needs) from None
        self._on_request(method, "200")
        return result

    def guests(self) -> list[Guest]:
        """Every VM and container of the cluster, in one call."""
        rows = self._call("list guests", "GET", lambda api: api.cluster.resources.get(type="vm"))
        out = []
        for row in rows or []:
            if row.get("type") not in ("lxc", "qemu") or "vmid" not in row:
                continue
            out.append(
                Guest(
                    vmid=int(row["vmid"]),
                    node=str(row.get("node", "")),
                    type=str(row["type"]),
                    name=str(row.get("name", "")),
                    status=GuestStatus.parse(row.get("status")),
                    tags=_split_tags(row.get("tags")),
                    lock=str(row["lock"]) if row.get("lock") else None,
                    template=bool(row.get("template")),
                    cores=int(row.get("maxcpu") or 0),
                    memory_mb=int(row.get("maxmem") or 0) // 1024**2,
                    disk_gb=int(row.get("maxdisk") or 0) // 1024**3,
                )
            )
        return out

    def create_lxc(self, node: str, params: dict[str, ParamValue]) -> str:
        """Start the create task (body from proxmox_body.create_container); returns its UPID.

        Refused first when the token could not see the container afterwards (see _can_see)."""
        vmid = int(params["vmid"])
        self._can_see("create", vmid)
        needs = f"VM.Allocate on /vms/{vmid}"  # PVE's refusal of the create itself names nothing
        return str(self._call("create", "POST", lambda api: api.nodes(node).lxc.post(**params), node, needs))

    def _can_see(self, step: str, vmid: int) -> None:
        """Raise ProxmoxError (403) unless the token holds VM.Audit on /vms/<vmid>.

        Proxmox creates a guest without it, then hides that guest from every list: the reconciler would find
        its container missing and make another on every try."""
        path = f"/vms/{vmid}"
        held = self._call(step, "GET", lambda api: api.access.permissions.get(path=path))
        # PVE answers {path: {privilege: 1}}; the paths above it count too, as the privileges propagate.
        privileges = {p for where, privs in dict(held or {}).items() if _covers(where, path) for p in privs}
        if "VM.Audit" not in privileges:
            reason = (
                f"the API token lacks VM.Audit on {path} (see the README's Reconciler role): Proxmox would hide"
                " the guest once made, and the reconciler would make another on every try; nothing was created"
            )
            raise ProxmoxError(step, reason, 403, temporary=False)

    def start(self, node: str, vmid: int, kind: str = "lxc") -> str:
        """Start the start task of a container (kind lxc) or VM (kind qemu); returns its UPID."""
        return str(self._call("start", "POST", lambda api: _guest(api, node, kind, vmid).status.start.post(), node))

    def clone_vm(
        self, node: str, template: int, newid: int, name: str, full: bool, storage: str | None, target: str
    ) -> str:
        """Start cloning the template VM on node into newid on target (full: onto storage); returns its UPID.

        Refused first when the token could not see the VM afterwards (see _can_see)."""
        self._can_see("clone", newid)
        body: dict[str, str | int] = {"newid": newid, "name": name, "full": 1 if full else 0}
        if full and storage:
            body["storage"] = storage  # Proxmox refuses a target storage for a linked clone
        if target != node:
            body["target"] = target
        needs = f"VM.Clone on /vms/{template} and VM.Allocate on /vms/{newid}"
        return str(
            self._call("clone", "POST", lambda api: api.nodes(node).qemu(template).clone.post(**body), node, needs)
        )

    def agent_interfaces(self, node: str, vmid: int) -> list[Interface] | None:
        """A VM's interfaces as its QEMU guest agent reports them; None while the agent does not answer yet."""
        try:
            answer = self._call(
                "read guest agent",
                "GET",
                lambda api: api.nodes(node).qemu(vmid).agent("network-get-interfaces").get(),
                node,
            )
        except ProxmoxError as exc:
            if exc.status == 500 and _AGENT_NOT_YET.search(exc.reason):
                return None
            raise
        out = []
        for row in (answer or {}).get("result") or []:
            ips = tuple(
                str(a["ip-address"]) for a in row.get("ip-addresses") or [] if a.get("ip-address-type") == "ipv4"
            )
            mac = str(row.get("hardware-address") or "").lower() or None
            out.append(Interface(str(row.get("name", "")), ips, mac))
        return out

    def agent_file(self, node: str, vmid: int, path: str) -> str | None:
        """A file inside a VM, read by its QEMU guest agent; None while the agent does not answer yet."""
        needs = f"VM.GuestAgent.FileRead on /vms/{vmid}"
        try:
            answer = self._call(
                "read file through guest agent",
                "GET",
                lambda api: api.nodes(node).qemu(vmid).agent("file-read").get(file=path),
                node,
                needs,
            )
        except ProxmoxError as exc:
            if exc.status == 500 and _AGENT_NOT_YET.search(exc.reason):
                return None
            raise
        return str((answer or {}).get("content") or "")

    def guest_config(self, node: str, kind: str, vmid: int) -> dict[str, object]:
        """The config of a container (kind lxc) or VM (kind qemu)."""
        config = self._call("read config", "GET", lambda api: getattr(api.nodes(node), kind)(vmid).config.get(), node)
        return dict(config or {})

    def container_state(self, node: str, vmid: int, kind: str = "lxc") -> tuple[GuestStatus, tuple[str, ...]]:
        """A guest's power state now (not the lagging one of /cluster/resources) and its tags."""
        current = self._call("read status", "GET", lambda api: _guest(api, node, kind, vmid).status.current.get(), node)
        config = self.guest_config(node, kind, vmid)
        return GuestStatus.parse((current or {}).get("status")), _split_tags(config.get("tags"))

    def interfaces(self, node: str, vmid: int) -> list[Interface]:
        """The container's interfaces with their IPv4 addresses (empty while it is stopped)."""
        rows = self._call("read interfaces", "GET", lambda api: api.nodes(node).lxc(vmid).interfaces.get(), node)
        out = []
        for row in rows or []:
            ips = tuple(
                str(a["ip-address"]) for a in row.get("ip-addresses") or [] if a.get("ip-address-type") == "inet"
            )
            out.append(Interface(str(row.get("name", "")), ips))
        return out

    def wait_task(self, node: str, upid: str, timeout: float, step: str, abort: Abort | None = None) -> TaskResult:
        """Poll a task until it stops; raises TaskFailed when it ended in an error, ProxmoxError (temporary)
        when it is still running after timeout seconds.

        abort is asked after every poll; a reason from it stops the wait (the task goes on in Proxmox).
        """

        def look() -> tuple[bool, Any]:
            status = self._call(step, "GET", lambda api: api.nodes(node).tasks(upid).status.get(), node)
            return status.get("status") == "stopped", status

        status = _wait(
            step, timeout, abort, look, lambda _: f"task {upid} still running", f"task {upid} goes on in Proxmox"
        )
        exitstatus = str(status.get("exitstatus", ""))
        if exitstatus == "OK":
            return TaskResult(upid, exitstatus)
        log = self._task_log(node, upid, step)
        if exitstatus.startswith("WARNINGS"):
            # It did its work; what it warned about goes to the job log.
            return TaskResult(upid, exitstatus, tuple(line for line in log if "WARN" in line))
        raise TaskFailed(step, upid, exitstatus, log[-20:])

    def _task_log(self, node: str, upid: str, step: str) -> tuple[str, ...]:
        log = self._call(step, "GET", lambda api: api.nodes(node).tasks(upid).log.get(limit=500), node)
        return tuple(str(entry.get("t", "")) for entry in log or [])

    def container_config(self, node: str, vmid: int, kind: str = "lxc") -> GuestConfig:
        """A guest's config (pending changes included, as Proxmox shows them) with its digest."""
        raw = self.guest_config(node, kind, vmid)
        digest = str(raw.pop("digest", ""))
        values = {key: str(value) for key, value in raw.items()}
        pending: list[str] = []
        if kind == "qemu":
            # A running VM takes some changes (memory, cloud-init) only at its next boot: compared as written,
            # and said to wait for that boot.
            rows = self._call("read config", "GET", lambda api: api.nodes(node).qemu(vmid).pending.get(), node)
            for row in rows or []:
                key = str(row.get("key", ""))
                if row.get("delete"):
                    values.pop(key, None)
                    pending.append(key)
                elif "pending" in row:
                    values[key] = str(row["pending"])
                    pending.append(key)
        return GuestConfig(vmid, node, values, digest, tuple(sorted(pending)))

    def update_config(
        self,
        node: str,
        vmid: int,
        params: Mapping[str, str | int],
        delete: Sequence[str],
        digest: str,
        kind: str = "lxc",
    ) -> None:
        """Change a guest's config; Proxmox refuses it (ConfigChanged) if the digest is no longer current."""
        body: dict[str, str | int] = {**params, "digest": digest}
        if delete:
            body["delete"] = ",".join(delete)
        self._call("update config", "PUT", lambda api: _guest(api, node, kind, vmid).config.put(**body), node)

    def resize(self, node: str, vmid: int, disk: str, size_gb: int, digest: str | None, kind: str = "lxc") -> str:
        """Start growing a disk to size_gb GiB (absolute, so a retry asks for the same size); returns its UPID."""
        body: dict[str, str] = {"disk": disk, "size": f"{size_gb}G"}
        if digest is not None:
            body["digest"] = digest
        return str(self._call("resize", "PUT", lambda api: _guest(api, node, kind, vmid).resize.put(**body), node))

    def migrate(self, node: str, vmid: int, target: str, restart: bool) -> str:
        """Start moving a container to target (restart: shut a running one down, move it, start it there)."""
        body: dict[str, str | int] = {"target": target}
        if restart:
            body["restart"] = 1
        return str(self._call("migrate", "POST", lambda api: api.nodes(node).lxc(vmid).migrate.post(**body), node))

    def shutdown(self, node: str, vmid: int, timeout: int, kind: str = "lxc") -> str:
        """Start a clean shutdown that becomes a hard stop after timeout seconds; returns its UPID."""
        return str(
            self._call(
                "shutdown",
                "POST",
                lambda api: _guest(api, node, kind, vmid).status.shutdown.post(timeout=timeout, forceStop=1),
                node,
            )
        )

    def stop(self, node: str, vmid: int, kind: str = "lxc") -> str:
        """Start a hard stop; returns its UPID."""
        return str(self._call("stop", "POST", lambda api: _guest(api, node, kind, vmid).status.stop.post(), node))

    def destroy(self, node: str, vmid: int, kind: str = "lxc") -> str:
        """Start destroying a stopped guest with its disks, and its entries in backup jobs, replication and HA;
        returns its UPID."""
        return str(
            self._call(
                "destroy",
                "DELETE",
                lambda api: _guest(api, node, kind, vmid).delete(**{"purge": 1, "destroy-unreferenced-disks": 1}),
                node,
            )
        )

    def container_lock(self, node: str, vmid: int, step: str = "read status", kind: str = "lxc") -> str | None:
        """The guest's lock (backup, snapshot, migrate, create, clone, ...), or None."""
        current = self._call(step, "GET", lambda api: _guest(api, node, kind, vmid).status.current.get(), node)
        lock = (current or {}).get("lock")
        return str(lock) if lock else None

    def wait_unlocked(
        self, node: str, vmid: int, timeout: float, step: str, abort: Abort | None = None, kind: str = "lxc"
    ) -> None:
        """Poll until the guest holds no lock; ProxmoxError (temporary) if it still does after timeout
        seconds, or when abort gives a reason to stop waiting."""

        def look() -> tuple[bool, str | None]:
            lock = self.container_lock(node, vmid, step, kind)
            return lock is None, lock

        _wait(step, timeout, abort, look, lambda lock: f"{_word(kind)} {vmid} still locked ({lock})")
