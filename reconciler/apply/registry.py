"""The one executor per action kind; mypy's exhaustiveness check makes a missing kind a type error."""

from __future__ import annotations

from typing import assert_never

from reconciler.apply.context import JobContext
from reconciler.apply.create_container import create_container
from reconciler.apply.find_address import find_address
from reconciler.apply.provision import provision
from reconciler.apply.start_container import start_container
from reconciler.model.action import Action, CreateContainer, FindAddress, Provision, StartContainer


def execute(action: Action, job: JobContext) -> str:
    """Run the action's executor; returns the job's summary, raises ReconcilerError when it fails."""
    match action:
        case CreateContainer():
            return create_container(action, job)
        case StartContainer():
            return start_container(action, job)
        case FindAddress():
            return find_address(action, job)
        case Provision():
            return provision(action, job)
        case _:
            assert_never(action)
