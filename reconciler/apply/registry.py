"""The one executor per action kind; mypy's exhaustiveness check makes a missing kind a type error."""

from __future__ import annotations

from typing import assert_never

from reconciler.apply.adopt_container import adopt_container
from reconciler.apply.change_records import change_records
from reconciler.apply.clone_vm import clone_vm
from reconciler.apply.context import JobContext
from reconciler.apply.create_container import create_container
from reconciler.apply.destroy_container import destroy_container
from reconciler.apply.find_address import find_address
from reconciler.apply.migrate_container import migrate_container
from reconciler.apply.provision import provision
from reconciler.apply.start_container import start_container
from reconciler.apply.stop_container import stop_container
from reconciler.apply.update_container import update_guest
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


def execute(action: Action, job: JobContext) -> str:
    """Run the action's executor; returns the job's summary, raises ReconcilerError when it fails."""
    match action:
        case CreateContainer():
            return create_container(action, job)
        case CloneVm():
            return clone_vm(action, job)
        case StartContainer():
            return start_container(action, job)
        case FindAddress():
            return find_address(action, job)
        case Provision():
            return provision(action, job)
        case UpdateContainer():
            return update_guest(action, job)
        case MigrateContainer():
            return migrate_container(action, job)
        case StopContainer():
            return stop_container(action, job)
        case DestroyContainer():
            return destroy_container(action, job)
        case AdoptContainer():
            return adopt_container(action, job)
        case ChangeRecords():
            return change_records(action, job)
        case _:
            assert_never(action)
