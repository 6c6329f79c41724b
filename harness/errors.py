"""One exception root for everything a user can fix; anything else is a bug and keeps its traceback."""
from __future__ import annotations


class HarnessError(Exception):
    """A problem the user can fix; the CLI prints its message as one line."""


class UsageError(HarnessError):
    """Bad command-line values or settings."""


class DataError(HarnessError):
    """Input data that cannot be used as it is."""


class StoreError(HarnessError):
    """A study folder that cannot be read or written."""


class ClaimLost(HarnessError):
    """This process no longer holds the claim on its run (taken over, or not refreshable for longer than the
    stale time): it must stop and write nothing; the run's holder, or a later command, does it."""


class StrategyError(HarnessError):
    """A sampling strategy cannot satisfy the request (e.g. n larger than the pool)."""


class TrainingError(HarnessError):
    """A training run that cannot go on (its loss became NaN/inf or diverged); the grid records it."""
