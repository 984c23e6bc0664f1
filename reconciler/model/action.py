"""Actions: what a plan asks apply to do, one job each.

Every action carries its resource kind, its job type, how to describe it, and what a failure means: which
phase its request shows meanwhile and whether trying again by itself can help. `Action` is the closed union
apply's executor registry is checked against; a new kind of work adds a type here and to the union.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from reconciler.model.desired import Desired
from reconciler.model.vocab import JobType, Phase, ResourceKind


@dataclass(frozen=True)
class ActionBase:
    """One piece of work on one request's resource, on one node."""

    desired: Desired
    vmid: int
    node: str
    kind: ClassVar[ResourceKind]
    job_type: ClassVar[JobType]
    # The phase a request shows while this action's failure waits for its retry.
    failure_phase: ClassVar[Phase] = Phase.FAILED
    # Whether the action makes the resource: until it succeeds, the request has no VMID to show.
    creates: ClassVar[bool] = False
    # Whether waiting on a Proxmox task (bounded per node) or on something else (not bounded per node).
    uses_node_slot: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return self.desired.name

    def describe(self) -> str:
        """What the action will do, for plans and job logs."""
        raise NotImplementedError

    def progress(self) -> str:
        """What the request's status says while the action is queued or running."""
        raise NotImplementedError

    def worth_retry(self, temporary: bool) -> bool:
        """Whether to try again after a backoff; otherwise only a change of the request (or an hour) retries."""
        return temporary


@dataclass(frozen=True)
class CreateContainer(ActionBase):
    """Create the request's container with this VMID on its node, started when the request says so."""

    kind = ResourceKind.LXC
    job_type = JobType.CREATE
    creates = True

    def describe(self) -> str:
        c = self.desired.container
        return (
            f"create {self.name}: lxc {self.vmid} on {self.node} ({self.desired.profile}, {c.cores} cores,"
            f" {c.memory} MB, {c.disk} GB, {c.network.mode})"
        )

    def progress(self) -> str:
        return f"creating container {self.vmid} on {self.node}"


@dataclass(frozen=True)
class StartContainer(ActionBase):
    """Start the request's stopped container where it is."""

    kind = ResourceKind.LXC
    job_type = JobType.START

    def describe(self) -> str:
        return f"start {self.name}: lxc {self.vmid} on {self.node}"

    def progress(self) -> str:
        return f"starting container {self.vmid} on {self.node}"


@dataclass(frozen=True)
class FindAddress(ActionBase):
    """Wait for the DHCP address of the request's running container."""

    kind = ResourceKind.LXC
    job_type = JobType.FIND_ADDRESS
    failure_phase = Phase.PROVISIONING  # a lease that has not come yet is a wait, not a failure
    uses_node_slot = False

    def describe(self) -> str:
        return f"find address of {self.name}: lxc {self.vmid} on {self.node}"

    def progress(self) -> str:
        return f"container {self.vmid} running on {self.node}; waiting for a DHCP address"

    def worth_retry(self, temporary: bool) -> bool:
        return True


Action = CreateContainer | StartContainer | FindAddress
