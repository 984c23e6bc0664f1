"""Numbered passes, for `reconciler reconcile`: ask for a pass, wait for it, and for those after it while a
named request is still on its way.

Passes never overlap, so a pass that begins after the ask has fetched after it: the answer reflects every push
made before `reconcile` was run. The asker never starts a pass itself; it fires the trigger the loop waits on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from reconciler.model.standing import Standing
from reconciler.model.vocab import Phase
from reconciler.report.status import document

KEEP = 64  # finished passes remembered for askers still reading them
UNSETTLED = (Phase.PENDING, Phase.PROVISIONING)


@dataclass(frozen=True)
class Outcome:
    """What one pass came to: its statuses, or the part it failed on in fixed words."""

    number: int
    revision: str | None = None
    commit: str | None = None
    started: Mapping[str, int] = field(default_factory=dict)  # request -> job
    statuses: Mapping[str, Standing] = field(default_factory=dict)
    failed: str = ""


class Passes:
    """The loop numbers its passes (begin/end); an asker waits for one by number."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self.clock = clock
        self._begun = 0
        self._done: dict[int, Outcome] = {}
        self._stopped = False

    def begin(self) -> int:
        with self._cond:
            self._begun += 1
            return self._begun

    def end(self, outcome: Outcome) -> None:
        with self._cond:
            self._done[outcome.number] = outcome
            for old in [n for n in self._done if n <= outcome.number - KEEP]:
                del self._done[old]
            self._cond.notify_all()

    def stop(self) -> None:
        """The daemon stops: every asker gets its answer now."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def next_number(self) -> int:
        """The number the next pass to begin will have."""
        with self._cond:
            return self._begun + 1

    def last(self) -> Outcome | None:
        """The latest finished pass that has statuses (a failed pass has none)."""
        with self._cond:
            good = [o for o in self._done.values() if not o.failed]
            return max(good, key=lambda o: o.number) if good else None

    def wait(self, number: int, deadline: float) -> Outcome | None:
        """The outcome of the first pass numbered `number` or later; None when stopping or past the deadline."""
        with self._cond:
            while True:
                found = [o for n, o in self._done.items() if n >= number]
                if found:
                    return min(found, key=lambda o: o.number)
                left = deadline - self.clock()
                if self._stopped or left <= 0:
                    return None
                self._cond.wait(left)


def ask(
    passes: Passes, fire: Callable[[str], None], names: Sequence[str], timeout: float
) -> tuple[int, dict[str, object]]:
    """A pass now, and, for named requests, the passes after it until none is Pending or Provisioning.

    The answer: HTTP status and a document (its shape is documented in the README: keep it stable).
    """
    clock = passes.clock
    deadline = clock() + timeout
    before = passes.last()
    number = passes.next_number()
    fire("reconcile")
    seen: list[Outcome] = []
    error = ""
    while True:
        outcome = passes.wait(number, deadline)
        if outcome is None:
            error = "stopping" if clock() < deadline else f"no answer within {timeout:g} s"
            break
        seen.append(outcome)
        number = outcome.number + 1
        if outcome.failed:
            error = f"the pass failed: {outcome.failed}"
            break
        if not names or not any(outcome.statuses[n].phase in UNSETTLED for n in names if n in outcome.statuses):
            break
    good = [o for o in seen if not o.failed]
    final = good[-1].statuses if good else {}
    started = {name: job for o in seen for name, job in o.started.items()}
    if names:
        shown = [n for n in names if n in final]
    else:  # what this ask changed: a job started, or a status that is new or differs from before it
        old = before.statuses if before is not None else {}
        shown = sorted(n for n, s in final.items() if n in started or not s.same_as(old.get(n)))
    doc: dict[str, object] = {
        "passes": [
            {"number": o.number, "revision": o.revision, "commit": o.commit, "error": o.failed or None} for o in seen
        ],
        "started": [{"request": n, "job": j} for n, j in sorted(started.items())],
        "requests": [document(final[n]) for n in shown],
        "unknown": [n for n in names if good and n not in final],
        "settled": not error,
        "error": error or None,
    }
    if seen:
        return 200, doc
    return (503 if error == "stopping" else 504), doc
