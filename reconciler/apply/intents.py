"""Intents whose outcome a crash left unknown, resolved by looking at the cluster, never by acting again.

An intent is recorded before every call that changes Proxmox and settled when its job learns the outcome. One
still there after its job is gone (the daemon was killed, the machine rebooted) is settled once the guest
shows no task's lock: the plan has already looked at what is really there and decides from that.
"""

from __future__ import annotations

import structlog

from reconciler.gateways.sqlite import JobStore
from reconciler.model.observed import Observed
from reconciler.model.vocab import JobType

log = structlog.get_logger("reconciler.intents")


def resolve_intents(store: JobStore, observed: Observed) -> list[str]:
    """Settle the intents of requests with no job in flight whose guest is free of locks; the requests."""
    resolved = []
    for intent in observed.intents:
        if intent.request in observed.in_flight:
            continue  # its job is still at it
        guest = observed.by_vmid.get(intent.vmid)
        if guest is not None and guest.lock is not None:
            continue  # a task begun before the crash still holds it: its outcome is not known yet
        store.settle(intent.id)
        if guest is None and intent.action == JobType.DESTROY:
            store.forget(intent.request)
        outcome = "gone" if guest is None else f"{guest.status} on {guest.node}"
        log.info(
            "intent resolved",
            request=intent.request,
            action=intent.action,
            vmid=intent.vmid,
            outcome=outcome,
            job_id=intent.job_id,
        )
        resolved.append(intent.request)
    return resolved
