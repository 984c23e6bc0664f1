"""The mass-change guard (pure): a pass that would destroy, stop or orphan too many owned guests does none of it.

A bad merge that empties or truncates requests/ must never cascade. Past the share (and always when every
owned guest would go), the destroys and stops are not started and the orphans are not declared, until the
operator confirms the revision of requests/ in the confirm file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.model.action import Action, DestroyContainer, StopContainer, UpdateContainer
from reconciler.model.standing import Standing
from reconciler.model.vocab import GuestState, Phase


@dataclass(frozen=True)
class Guard:
    """The share of owned guests one pass may destroy, stop or orphan, and what the operator confirmed."""

    max_share: float = 0.5
    confirm_file: str = "reconciler-confirm.yaml"
    revision: str | None = None  # the last commit that changed requests/: what a confirmation names
    confirmed: str | None = None  # the revision the confirm file names

    def trips(self, affected: int, owned: int) -> bool:
        if affected == 0 or owned == 0:
            return False
        return affected > self.max_share * owned or affected >= owned

    @property
    def confirmed_now(self) -> bool:
        return self.revision is not None and self.confirmed == self.revision


@dataclass(frozen=True)
class Held:
    """What the guard held back in one pass, said once for every affected status and the log."""

    reason: str
    destroy: int
    stop: int
    orphans: frozenset[str]  # requests whose removal is not yet declared: their routes stay too


def apply_guard(
    guard: Guard, actions: list[Action], standings: dict[str, Standing], previous: dict[str, Standing], owned: int
) -> Held | None:
    """Drop the destructive actions and orphan standings when the pass would affect too many owned guests.

    actions and standings are changed in place; previous: the statuses before this pass (an orphan held back
    keeps what it said). Returns what was held back, or None when the pass may go ahead.
    """
    # Clearing the protection flag is the first step of a destroy (state: absent): it counts as one.
    destroys = [
        a
        for a in actions
        if isinstance(a, DestroyContainer)
        or (isinstance(a, UpdateContainer) and a.desired.life.state == GuestState.ABSENT)
    ]
    stops = [a for a in actions if isinstance(a, StopContainer)]
    # Only a new orphan is a change: one already reported Orphaned by an earlier pass is not counted again.
    orphans = [
        n
        for n, s in standings.items()
        if s.phase == Phase.ORPHANED and (n not in previous or previous[n].phase != Phase.ORPHANED)
    ]
    affected = len(destroys) + len(stops) + len(orphans)
    if not guard.trips(affected, owned) or guard.confirmed_now:
        return None
    share = "every one" if affected >= owned else f"more than {guard.max_share:.0%}"
    reason = (
        f"held by the mass-change guard: this pass would destroy {len(destroys)}, stop {len(stops)} and orphan"
        f" {len(orphans)} of {owned} owned guests ({share}); none of it was done. If that is meant, write"
        f" `confirm: {guard.revision}` to {guard.confirm_file} and push"
    )
    held = {a.name for a in [*destroys, *stops]}
    actions[:] = [a for a in actions if a.name not in held]
    for name in held:
        standings[name] = replace(standings[name], phase=Phase.PENDING, message=reason)
    for name in orphans:
        # An orphan held back keeps the status it had (its file, its phase), with the reason.
        before = previous.get(name)
        if before is not None and before.phase != Phase.ORPHANED:
            standings[name] = replace(before, message=reason)
        else:
            standings[name] = replace(standings[name], phase=Phase.PENDING, message=reason)
    return Held(reason, len(destroys), len(stops), frozenset(orphans))
