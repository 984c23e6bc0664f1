"""Where a request stands: the one record plan and apply produce and the status file renders."""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.model.vocab import DnsState, Phase, SetupState


@dataclass(frozen=True, order=True)
class Drift:
    """A field the request owns that Proxmox holds otherwise, each in its normal form."""

    field: str
    desired: str
    observed: str


@dataclass(frozen=True, order=True)
class Refusal:
    """A change Proxmox cannot make in place (or the request does not allow): asked, and kept instead."""

    field: str
    asked: str
    kept: str

    def __str__(self) -> str:
        return f"{self.field}: asked {self.asked}, kept {self.kept}"


@dataclass(frozen=True)
class DnsPart:
    """Where a request's DNS records stand, beside its container: a DNS failure fails only this part."""

    state: DnsState
    records: tuple[str, ...] = ()  # "web.lab.example A 192.168.1.20", as they are (or will be once done)
    message: str = ""  # what is being done, or the server's answer to the last update


@dataclass(frozen=True)
class Standing:
    """Phase and message for people; applied, healthy and setup apart, for alerts on either."""

    name: str
    request: str  # the request file's path
    phase: Phase
    message: str
    revision: str | None = None
    vmid: int | None = None
    node: str | None = None
    address: str | None = None
    service: str | None = None
    job: int | None = None
    problems: tuple[str, ...] = ()
    # The container exists as asked (created, and running unless start: false); None when not known.
    applied: bool | None = None
    # Setup succeeded and the health path answered; False when setup or the health check failed.
    healthy: bool | None = None
    setup: SetupState | None = None
    output: tuple[str, ...] = ()  # the last lines a failed setup step printed
    drift: tuple[Drift, ...] = ()  # fields changed by hand in Proxmox (or, while adopting, every difference)
    refused: tuple[Refusal, ...] = ()  # changes the request asks that are not made
    flapping: bool = False  # drift came back after corrections: reported, no longer corrected each pass
    dns: DnsPart | None = None  # its DNS records, when it has or wants some

    def same_as(self, other: Standing | None) -> bool:
        """Equal but for the job id: then the older record stands, and its job still explains it."""
        return other is not None and replace(self, job=None) == replace(other, job=None)
