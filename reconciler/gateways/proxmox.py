"""The only module that talks to Proxmox VE (through proxmoxer); callers get typed objects and ProxmoxError."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from proxmoxer import ProxmoxAPI
from proxmoxer.core import AuthenticationError, ResourceException

from reconciler.config import ProxmoxConfig
from reconciler.gateways.proxmox_body import ParamValue
from reconciler.model.errors import ProxmoxError
from reconciler.model.observed import Guest, Interface
from reconciler.model.vocab import GuestStatus

# proxmoxer logs request bodies at INFO, and a create body may carry secrets one day: keep it quiet.
for _name in ("proxmoxer", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# The privileges the reconciler's API token needs, on /: the README's `pveum role add` lists exactly these,
# and the tests and the demo grant exactly these, with permission checks on.
REQUIRED_PRIVILEGES = (
    "Datastore.AllocateSpace",
    "Datastore.Audit",
    "SDN.Use",
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CPU",
    "VM.Config.Disk",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.PowerMgmt",
)

RequestHook = Callable[[str, str], None]  # (HTTP method, status code or 'error')


@dataclass(frozen=True)
class TaskResult:
    """How a Proxmox task ended."""

    upid: str
    exitstatus: str


class TaskFailed(ProxmoxError):
    """A task ended in an error: its exit status, and the tail of its log to put in the job log."""

    def __init__(self, step: str, upid: str, exitstatus: str, log: tuple[str, ...]) -> None:
        # A task's failure (storage busy, a lock, a node short of space) may pass; it is retried with backoff.
        super().__init__(step, exitstatus, None, temporary=True)
        self.upid = upid
        self.log = log


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
    if isinstance(exc, AuthenticationError):
        return f"authentication failed: {exc}", 401
    if isinstance(exc, requests.exceptions.Timeout):
        return "Proxmox did not answer in time", None
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS verification of the Proxmox API failed (check proxmox.ca_file)", None
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "cannot connect to the Proxmox API", None
    return f"{type(exc).__name__}: {exc}", None


def _split_tags(raw: object) -> tuple[str, ...]:
    return tuple(t for t in str(raw or "").replace(",", ";").replace(" ", ";").split(";") if t)


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

    def _call(self, step: str, method: str, fn: Callable[[Any], Any]) -> Any:
        try:
            result = fn(self._api())
        except (ResourceException, AuthenticationError, requests.exceptions.RequestException) as exc:
            reason, status = _reason(exc)
            if status is None:
                reason += f" at {self._config.host}:{self._config.port}"
            self._on_request(method, str(status) if status else "error")
            raise ProxmoxError(step, reason, status, temporary=_temporary(status)) from None
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
        """Start the create task (body from proxmox_body.create_container); returns its UPID."""
        return str(self._call("create", "POST", lambda api: api.nodes(node).lxc.post(**params)))

    def start_lxc(self, node: str, vmid: int) -> str:
        """Start the start task; returns its UPID."""
        return str(self._call("start", "POST", lambda api: api.nodes(node).lxc(vmid).status.start.post()))

    def guest_config(self, node: str, kind: str, vmid: int) -> dict[str, object]:
        """The config of a container (kind lxc) or VM (kind qemu)."""
        config = self._call("read config", "GET", lambda api: getattr(api.nodes(node), kind)(vmid).config.get())
        return dict(config or {})

    def container_state(self, node: str, vmid: int) -> tuple[GuestStatus, tuple[str, ...]]:
        """A container's power state now (not the lagging one of /cluster/resources) and its tags."""
        current = self._call("read status", "GET", lambda api: api.nodes(node).lxc(vmid).status.current.get())
        config = self.guest_config(node, "lxc", vmid)
        return GuestStatus.parse((current or {}).get("status")), _split_tags(config.get("tags"))

    def interfaces(self, node: str, vmid: int) -> list[Interface]:
        """The container's interfaces with their IPv4 addresses (empty while it is stopped)."""
        rows = self._call("read interfaces", "GET", lambda api: api.nodes(node).lxc(vmid).interfaces.get())
        out = []
        for row in rows or []:
            ips = tuple(
                str(a["ip-address"]) for a in row.get("ip-addresses") or [] if a.get("ip-address-type") == "inet"
            )
            out.append(Interface(str(row.get("name", "")), ips))
        return out

    def wait_task(
        self, node: str, upid: str, timeout: float, step: str, abort: Callable[[], str | None] | None = None
    ) -> TaskResult:
        """Poll a task until it stops; raises TaskFailed when it ended in an error, ProxmoxError (temporary)
        when it is still running after timeout seconds.

        abort is asked after every poll; a reason from it stops the wait (the task goes on in Proxmox).
        """
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            status = self._call(step, "GET", lambda api: api.nodes(node).tasks(upid).status.get())
            if status.get("status") == "stopped":
                break
            if time.monotonic() >= deadline:
                raise ProxmoxError(step, f"task {upid} still running after {timeout:g} s", temporary=True)
            reason = abort() if abort else None
            if reason:
                raise ProxmoxError(step, f"{reason}; task {upid} goes on in Proxmox", temporary=True)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)
        exitstatus = str(status.get("exitstatus", ""))
        if exitstatus == "OK" or exitstatus.startswith("WARNINGS"):
            return TaskResult(upid, exitstatus)
        log = self._call(step, "GET", lambda api: api.nodes(node).tasks(upid).log.get(limit=500))
        raise TaskFailed(step, upid, exitstatus, tuple(str(entry.get("t", "")) for entry in log or [])[-20:])
