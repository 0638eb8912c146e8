"""grainline's error types: one base, and whether another try can help.

Code that decides whether to retry (a Prefect task's ``retry_condition_fn``, a
commit loop) asks the type, never the wording of a message. A library's error that
means "try again" (a lost commit race in LanceDB) is translated into one of these
types once, where grainline calls that library (``grainline.storage``)."""

from __future__ import annotations


class GrainlineError(Exception):
    """An error grainline raises on purpose, with a message meant for the user."""


class TransientError(GrainlineError):
    """The same call may succeed if made again unchanged: a commit that lost a race
    with another writer, a store that was briefly unreachable or throttled, a lock that
    was busy for longer than the caller waited. Tasks retry these."""


class TerminalError(GrainlineError):
    """Trying again unchanged cannot help: bad input, a missing dependency, a lease that
    was lost, a step that failed after the table was written. Reported, never retried."""
