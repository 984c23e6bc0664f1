"""The reconciler's vocabularies: every phase, job type, state and status it writes or reads, once."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """Where a request stands, as its status file says."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    FAILED = "Failed"
    INVALID = "Invalid"
    ORPHANED = "Orphaned"

    @property
    def failing(self) -> bool:
        return self in (Phase.FAILED, Phase.INVALID)


class JobType(StrEnum):
    """What one job does; each action kind has one, and a refused request gets a `validate` job."""

    CREATE = "create"
    START = "start"
    FIND_ADDRESS = "find-address"
    VALIDATE = "validate"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ResourceKind(StrEnum):
    """The kinds of resource a request can own, as the inventory records them."""

    LXC = "lxc"


class ResourceState(StrEnum):
    """How far the reconciler got with a resource: `creating` is written before the call that creates it."""

    CREATING = "creating"
    CREATED = "created"


class GuestStatus(StrEnum):
    """A guest's power state as /cluster/resources reports it; `unknown` when its node is offline."""

    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> GuestStatus:
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN


class NetworkMode(StrEnum):
    DHCP = "dhcp"
    STATIC = "static"
