"""Failed attempts and when to try them again (pure; the clock is given)."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model.standing import Standing
from reconciler.model.vocab import JobType


@dataclass(frozen=True)
class Attempt:
    """The last failed attempt at a request's action: what the request shows until retry_at."""

    job_type: JobType
    revision: str | None
    standing: Standing
    failures: int
    retry_at: float

    def holds(self, job_type: JobType, revision: str | None, now: float) -> bool:
        """Whether this failure still holds back the same work on the same request file."""
        return job_type == self.job_type and revision == self.revision and now < self.retry_at


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff from base to cap seconds; what cannot pass by itself waits the cap."""

    base: float = 30.0
    cap: float = 3600.0

    def next(
        self,
        previous: Attempt | None,
        job_type: JobType,
        revision: str | None,
        standing: Standing,
        worth_retry: bool,
        now: float,
    ) -> Attempt:
        same = previous is not None and previous.job_type == job_type and previous.revision == revision
        failures = previous.failures + 1 if same and previous is not None else 1
        delay = min(self.cap, self.base * 2 ** (failures - 1)) if worth_retry else self.cap
        return Attempt(job_type, revision, standing, failures, now + delay)
