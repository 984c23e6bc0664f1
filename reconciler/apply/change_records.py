"""Executor: create, change or delete a request's DNS records, one signed update per record name.

Each update carries its own prerequisites (see gateways.dns), so a record someone else made is never written.
Where the inventory was wrong about a name (lost, or written before a restore), the update that fits is tried
once: a create that finds the name in use changes it if the ownership TXT says it is this request's; a change
that finds no such TXT creates it if the name is free; a delete that finds no such TXT has nothing of ours to
delete. Every record is tried; the job fails with each one that did not go through.
"""

from __future__ import annotations

from reconciler.apply.context import JobContext
from reconciler.gateways.dns import DnsError, DnsServer
from reconciler.model.action import ChangeRecords
from reconciler.model.dns import RecordChange, heritage
from reconciler.model.errors import ReconcilerError
from reconciler.model.vocab import RecordOp

NOT_OURS = "NXRRSET"  # the ownership TXT is not there as this request's
IN_USE = "YXDOMAIN"  # the name holds records


class RecordsFailed(ReconcilerError):
    """Some of the request's records could not be written; temporary when every failure may pass by itself."""

    def __init__(self, failures: list[DnsError]) -> None:
        self.step = "dns update"
        self.reason = "; ".join(f.reason for f in failures)
        self.temporary = all(f.temporary for f in failures)
        super().__init__(self.reason)


def change_records(action: ChangeRecords, job: JobContext) -> str:
    server = job.tools.dns
    if server is None:
        raise RecordsFailed([DnsError("dns update", "dns.rfc2136 is not configured any more", temporary=False)])
    txt = heritage(job.tools.dns_owner, action.name)
    failures: list[DnsError] = []
    done = 0
    for change in action.changes:
        try:
            job.tools.records_written()  # before: an update whose answer is lost may still have been made
            said = _apply(server, change, txt)
        except DnsError as exc:
            job.log.error(f"{change}: {exc.reason}", answer=exc.answer)
            failures.append(exc)
            continue
        _remember(job, action.name, change if said is None else said, gone=said is None)
        if said is None:
            job.log.warning(f"{change}: its ownership record is gone, so it is not the reconciler's; left as it is")
            continue
        job.log.info(f"{said}: done")
        done += 1
    if failures:
        raise RecordsFailed(failures)
    return f"{done} of {len(action.changes)} DNS update(s) made"


def _remember(job: JobContext, request: str, change: RecordChange, gone: bool) -> None:
    """Keep the inventory in step with the update made: a record written, or one deleted or not ours."""
    name = change.record.name
    if gone or change.op == RecordOp.DELETE:
        job.record(lambda: job.store.drop_record(request, name))
    else:
        data = change.record.held()
        job.record(lambda: job.store.hold_record(request, name, data, job.job_id))


def _apply(server: DnsServer, change: RecordChange, txt: str) -> RecordChange | None:
    """Make the change (or the one that fits what the server holds); the change made, None when there is
    nothing of ours to delete."""
    try:
        server.apply(change, txt)
        return change
    except DnsError as exc:
        if change.op == RecordOp.CREATE and exc.answer == IN_USE:
            other = RecordChange(RecordOp.CHANGE, change.record)
        elif change.op == RecordOp.CHANGE and exc.answer == NOT_OURS:
            other = RecordChange(RecordOp.CREATE, change.record)
        elif change.op == RecordOp.DELETE and exc.answer == NOT_OURS:
            return None
        else:
            raise
        try:
            server.apply(other, txt)
        except DnsError:
            raise exc from None  # the first answer says what is in the way
        return other
