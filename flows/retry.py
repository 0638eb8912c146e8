"""Which errors a task retries: transient I/O (timeouts, connection drops, commit
conflicts between writers), never terminal ones (missing files, bad arguments)."""

from __future__ import annotations

from typing import Any

_TERMINAL_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_TRANSIENT_WORDS = ("conflict", "timed out", "timeout", "temporarily", "connection reset", "try again", "throttl", "slow down")


def is_transient(exc: BaseException | None) -> bool:
    """True for errors worth another try."""
    if exc is None:
        return False
    if isinstance(exc, _TERMINAL_OS_ERRORS):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, (OSError, RuntimeError)) and any(w in message for w in _TRANSIENT_WORDS)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient errors."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - we only classify it
        return is_transient(exc)
    return False
