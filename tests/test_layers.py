"""The layers hold: the pure steps load no outside system, and every action kind has its one executor."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

from reconciler.model.action import Action, ActionBase, ChangeRecords
from reconciler.model.vocab import JobType


def test_importing_the_plan_loads_no_gateway_library() -> None:
    code = (
        "import sys, reconciler.plan, reconciler.model.action;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'proxmoxer', 'requests', 'sqlite3', 'git', 'dns'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_action_kind_is_in_the_union_has_its_own_job_type_and_an_executor() -> None:
    kinds = get_args(Action)
    # Every action on a guest builds on ActionBase; DNS records may belong to a request that is gone.
    assert set(kinds) == set(ActionBase.__subclasses__()) | {ChangeRecords}
    assert len({k.job_type for k in kinds}) == len(kinds)
    assert {k.job_type for k in kinds} | {JobType.VALIDATE} == set(JobType)
    # That each has an executor is mypy's to prove: registry.execute ends in assert_never.
