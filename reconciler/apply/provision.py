"""Executor: run a request's setup steps inside its container through `pct exec`, one at a time.

Every line a step prints goes to the job's log as it comes, under a line that names the step. The first step
that fails ends the job with its name, exit status and last lines; the steps are written to be run again,
so the next attempt starts from the top. Success is recorded with the steps' digest, so the same steps are
not run again in the same container.
"""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.model.action import Provision
from reconciler.model.errors import SetupError
from reconciler.model.vocab import GuestStatus

OUTPUT_LINES = 10  # of a failed step, in the status file


def provision(action: Provision, job: JobContext) -> str:
    d, node, vmid = action.desired, action.node, action.vmid
    pct = job.tools.pct
    if pct is None:
        raise SetupError("setup", "provision.transport is off", temporary=False)
    if job.owned_state(node, vmid, d.name) != GuestStatus.RUNNING:
        raise SetupError("setup", f"container {vmid} on {node} is not running")
    steps = d.setup.steps
    for number, step in enumerate(steps, 1):
        job.log.info(f"step {number}/{len(steps)} {step.name}: {step.summary}", step=step.name)
        name = f"setup step {step.name}"
        outcome = pct.exec(node, vmid, ["sh", "-s", "--", *step.args], step.script, name, job.log.info, job.abort)
        if outcome.status != 0:
            last = next((line for line in reversed(outcome.tail) if line.strip()), "no output")
            raise SetupError(name, f"exit status {outcome.status}: {last}", outcome.tail[-OUTPUT_LINES:])
    job.record(lambda: job.store.record_setup(d.name, vmid, d.setup.digest, job.job_id))
    health = d.service.health if d.service else None
    return f"container {vmid} set up: {len(steps)} steps" + (f"; {health} answers" if health else "")
