"""Names of files and their documents: the stored id of a file (its real path), the
id of each document read from it, and the relative path and URI readers report."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from grainline.documents import Document, Failure


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _uri(path: Path) -> str:
    # absolute() rather than resolve(): a symlink inside the root keeps its own
    # location, and resolve() can raise on loops.
    return Path(os.path.abspath(path)).as_uri()


def file_id(path: str | os.PathLike[str]) -> str:
    """The identity of a file: its resolved real path, POSIX style. The same file
    reached through a subfolder, a single-file source, a relative or a symlinked path
    gets the same id, and two files with the same relative name under two roots never
    share one."""
    return Path(os.path.realpath(path)).as_posix()


def file_doc_id(fid: str, rel: str, local_id: str) -> str:
    """A reader's id for a document of the file at ``rel`` (``rel`` itself, ``rel#part-3``,
    or a record's own id) -> the stored id: the file's id, then ``#part-...`` or
    ``#<record id>``. Record ids are scoped to their file, so a record whose id looks
    like another file's path never collides with that file."""
    if local_id == rel:
        return fid
    if local_id.startswith(rel + "#"):
        return fid + local_id[len(rel):]
    return f"{fid}#{local_id}"


def _with_global_id(item: Document | Failure, fid: str, rel: str) -> Document | Failure:
    if isinstance(item, Document):
        return dataclasses.replace(item, doc_id=file_doc_id(fid, rel, item.doc_id))
    if item.where == rel and not item.doc_id:
        return dataclasses.replace(item, doc_id=fid)
    return item
