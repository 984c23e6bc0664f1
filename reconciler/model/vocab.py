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
    DELETED = "Deleted"  # state: absent, and its container is gone

    @property
    def failing(self) -> bool:
        return self in (Phase.FAILED, Phase.INVALID)


class JobType(StrEnum):
    """What one job does; each action kind has one, and a refused request gets a `validate` job."""

    CREATE = "create"
    CLONE = "clone"  # a VM, from its template
    START = "start"
    FIND_ADDRESS = "find-address"
    PROVISION = "provision"
    UPDATE = "update"
    MIGRATE = "migrate"
    STOP = "stop"
    DESTROY = "destroy"
    ADOPT = "adopt"
    DNS = "dns"  # create, change or delete a request's DNS records (RFC 2136)
    VALIDATE = "validate"


class Slot(StrEnum):
    """What a job holds while it runs, and so which queue it waits in."""

    TASK = "task"  # a Proxmox task on its node (proxmox.parallel_per_node at once per node)
    SETUP = "setup"  # pct sessions on its node (provision.parallel_per_node at once per node)
    WAIT = "wait"  # a wait that holds nothing on the node (a DHCP lease); many at once


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ResourceKind(StrEnum):
    """The kinds of resource a request can own, as the inventory records them."""

    LXC = "lxc"
    VM = "vm"  # a QEMU VM cloned from a cloud-init template
    DNS = "dns"  # a DNS record, keyed by its name

    @property
    def api(self) -> str:
        """The guest type in Proxmox's API paths and lists: lxc or qemu."""
        return "qemu" if self == ResourceKind.VM else str(self)

    @property
    def word(self) -> str:
        """The guest as messages name it."""
        return "VM" if self == ResourceKind.VM else "container"


GUEST_KINDS = (ResourceKind.LXC, ResourceKind.VM)


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


class GuestState(StrEnum):
    """What a request asks of its guest's existence and power: `present` runs it unless `start: false`."""

    PRESENT = "present"
    STOPPED = "stopped"
    ABSENT = "absent"


class DriftMode(StrEnum):
    """What to do with a field changed by hand in Proxmox: put it back, or only report it."""

    CORRECT = "correct"
    REPORT = "report"


class NetworkMode(StrEnum):
    DHCP = "dhcp"
    STATIC = "static"


class Transport(StrEnum):
    """How setup commands reach a container's node: `pct` over SSH, `pct` here, or not at all."""

    SSH = "ssh"
    LOCAL = "local"
    OFF = "off"


class SetupState(StrEnum):
    """Where the setup inside a container stands, as its status file says."""

    OFF = "off"  # provision.transport is off: the container is created only
    WAITING = "waiting"  # the container exists; setup runs once it runs and has its address
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class StepName(StrEnum):
    """The only setup steps there are; profiles pick from the ones after wait-network and apt-update."""

    WAIT_NETWORK = "wait-network"
    APT_UPDATE = "apt-update"
    INSTALL_PACKAGES = "install-packages"
    PREPARE_DOCROOT = "prepare-docroot"
    WRITE_WEB_SERVER_CONFIG = "write-web-server-config"
    ENABLE_NODE_EXPORTER = "enable-node-exporter"
    ENABLE_DOCKER = "enable-docker"
    CHECK_HEALTH = "check-health"


class RecordType(StrEnum):
    """The DNS record types the reconciler writes (and TXT, for its ownership registry)."""

    A = "A"
    CNAME = "CNAME"


class RecordOp(StrEnum):
    """What one signed update does to one record name."""

    CREATE = "create"  # only if the name is not in use
    CHANGE = "change"  # only if the reconciler's TXT for this request is there
    DELETE = "delete"  # likewise


class DnsState(StrEnum):
    """Where a request's DNS records stand, as its status file says (beside its container's phase)."""

    READY = "Ready"
    PENDING = "Pending"
    FAILED = "Failed"
