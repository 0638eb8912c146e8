"""Which errors a task retries, decided by type alone: grainline's
:class:`~grainline.errors.TransientError` (commit conflicts between writers, a store
briefly unavailable: ``grainline.storage`` types LanceDB's errors where it calls it)
and the standard library's ``TimeoutError`` and ``ConnectionError``; never a
:class:`~grainline.errors.TerminalError`, nor anything else (missing files, bad
arguments)."""

from __future__ import annotations

from typing import Any

from grainline.errors import TerminalError, TransientError


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth another try."""
    if exc is None or isinstance(exc, TerminalError):
        return False
    return isinstance(exc, (TransientError, TimeoutError, ConnectionError))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient errors."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False
