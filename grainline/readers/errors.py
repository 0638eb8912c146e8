"""Why a file cannot be read: the exception readers raise for a bad file, and the
wording of OS errors. ``read_file`` turns both into Failures."""

from __future__ import annotations


class _ReadError(Exception):
    """A reason a file cannot be read; turned into a Failure by read_file."""


OUTSIDE_ROOT = "symlink points outside the ingested root"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file not found (deleted after discovery?)"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    return f"OS error: {exc.strerror or exc}"
