"""Which files a source names: a folder walked without recursion, a single file, or a
glob matched by our own walker; the paths left out and why (hidden, unsupported
suffix, symlinks leaving the root, loops, broken links); and ``sync_scope``, the
stored ids a source covers."""

from __future__ import annotations

import errno
import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from grainline.readers.errors import OUTSIDE_ROOT, _os_reason
from grainline.readers.ids import file_id
from grainline.readers.object_store import is_object_uri, object_scope
from grainline.readers.registry import READERS, get_reader, known_suffixes, unsupported_reason
from grainline.readers.settings import ReaderSettings

_MAGIC = re.compile(r"[*?\[]")


class _Skip:
    """A path found during discovery that will not be read, and why (reported later)."""

    __slots__ = ("path", "reason", "stage")

    def __init__(self, path: Path, reason: str, stage: str = "read") -> None:
        self.path = path
        self.reason = reason
        # "read": a failure (a link that cannot be followed, a folder not listed);
        # "skip": a file no reader reads, counted and named apart from the failures.
        self.stage = stage


def discover(
    source: str | os.PathLike[str], settings: ReaderSettings | None = None
) -> tuple[Path, list[Path]]:
    """Find the readable files a source names.

    ``source`` is a folder (searched recursively), a single file, or a glob pattern
    such as ``"docs/**/*.md"``. Returns ``(root, files)``: ``root`` is the folder
    itself, the file's parent, or the glob's non-magic base; ``files`` are the paths
    with a known suffix, sorted by their path relative to ``root``.

    Symlinks that resolve outside ``root`` are left out (``iter_documents`` reports
    them as failures), and directory symlink loops are never followed.

    Raises FileNotFoundError when the source does not exist or matches nothing, and
    ValueError when a single named file has no reader.
    """
    root, entries = _scan(source, settings or ReaderSettings())
    return root, [Path(e) for e in entries if isinstance(e, str)]


def _scan(source: str | os.PathLike[str], settings: ReaderSettings) -> tuple[Path, list[str | _Skip]]:
    """Discovery proper: the files to read (their paths, as strings) plus the skipped
    paths, in one sorted list. Strings, not ``Path`` objects: building and comparing a
    ``Path`` per file was half of listing 100,000 unchanged files."""
    path = Path(source)
    src = os.fspath(source)
    # An existing path is taken literally even if its name contains glob characters.
    if path.is_dir():
        root = path
        entries = list(_walk(root, settings, include_hidden=settings.include_hidden))
    elif path.exists() or path.is_symlink():
        root = path.parent
        get_reader(path.suffix)  # a named file with no reader is a usage error
        entries = list(_check_single(path, root))
    elif _MAGIC.search(src):
        root, entries = _glob(src, settings)
    else:
        raise FileNotFoundError(f"source does not exist: {src}")

    # Every file's path is the root's, a separator, then its relative parts: sorted by
    # those parts (as ``Path`` orders them), cut from the string without a ``Path``. The
    # parts joined by NUL, which no name holds and which sorts before every character,
    # order as the lists of parts do, at a quarter of the cost of building the lists.
    n_root = len(root.parts)
    cut = len(_folder_prefix(os.fspath(root)))
    sep = os.sep

    def key(e: str | _Skip) -> str:
        return e[cut:].replace(sep, "\0") if isinstance(e, str) else "\0".join(e.path.parts[n_root:])

    entries.sort(key=key)
    return root, entries


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _folder_prefix(folder: str) -> str:
    """``folder`` with one trailing separator: what its entries' paths start with."""
    return folder if folder.endswith(os.sep) else folder + os.sep


def _check_single(path: Path, root: Path) -> Iterator[str | _Skip]:
    if path.is_symlink() and not _inside(os.path.realpath(path), os.path.realpath(root)):
        yield _Skip(path, OUTSIDE_ROOT)
    else:
        yield os.fspath(path)


def _walk(
    root: Path,
    settings: ReaderSettings,
    include_hidden: bool,
    want_dir: Callable[[tuple[str, ...]], bool] | None = None,
    want_file: Callable[[tuple[str, ...]], bool] | None = None,
) -> Iterator[str | _Skip]:
    """Walk ``root`` without recursion (deep trees must not hit the recursion limit),
    yielding the paths of the files to read as strings (``root``'s path, a separator,
    the relative parts) and the skipped paths.

    ``want_dir``/``want_file`` receive paths relative to root as parts; they let a
    glob prune directories that cannot match.
    """
    root_real = os.path.realpath(root)
    # Real paths of directories already entered: a symlinked directory pointing at
    # an ancestor (or anywhere already walked) is not entered twice, so loops end.
    visited = {root_real}
    stack: list[tuple[str, tuple[str, ...]]] = [(os.fspath(root), ())]
    # Symlinked folders wait until every real folder has been walked, so a target
    # reachable without symlinks keeps its real path (and doc_id) rather than the
    # alias that happened to be listed first.
    deferred: list[tuple[str, tuple[str, ...]]] = []
    first = True
    while stack or deferred:
        if stack:
            folder, rel = stack.pop()
        else:
            folder, rel = deferred.pop()
            real = os.path.realpath(folder)
            if real in visited:
                continue
            visited.add(real)
        try:
            with os.scandir(folder) as it:
                items = list(it)
        except OSError as exc:
            if first:
                raise  # the source itself cannot be listed: not a per-file problem
            yield _Skip(Path(folder), f"directory not listed: {_os_reason(exc)}")
            continue
        finally:
            first = False
        base = _folder_prefix(folder)
        for entry in items:
            name = entry.name
            if name.startswith(".") and not include_hidden:
                continue
            parts = rel + (name,)
            p = base + name
            is_link = False
            try:
                is_link = entry.is_symlink()
                # For a symlink, "dir" means what it points at. ELOOP (a file symlink
                # loop) counts as not-a-dir and is reported below as broken.
                is_dir = entry.is_dir(follow_symlinks=is_link)
            except OSError:
                if not is_link:
                    continue
                is_dir = False
            if is_dir:
                if want_dir is not None and not want_dir(parts):
                    continue
            else:
                if want_file is not None and not want_file(parts):
                    continue
                try:
                    regular = entry.is_file()  # the listing's file type: no stat for most files
                except OSError:
                    regular = False
                special = None if regular else _special_kind(p)
                if special is not None:
                    # Opening a FIFO would block the run; a device or socket holds no
                    # document. Counted and named, so it does not vanish without a word.
                    yield _Skip(Path(p), f"{special}, not a regular file: not read", stage="skip")
                    continue
                if os.path.splitext(name)[1].lower() not in READERS:
                    # Named in the run's summary and ledger: a user who dropped a
                    # report.docx in the folder learns it was not ingested.
                    yield _Skip(Path(p), unsupported_reason(name), stage="skip")
                    continue
            if is_link:
                real = os.path.realpath(p)
                if not _inside(real, root_real):
                    # Reported even when following is off: the user should learn that
                    # content they may have expected was not ingested, and why.
                    yield _Skip(Path(p), OUTSIDE_ROOT)
                    continue
                # Loops and dangling links are reported even when following is off:
                # the content the link was meant to bring in is missing either way.
                if not os.path.exists(real):
                    yield _Skip(Path(p), _broken_link_reason(p))
                    continue
                if is_dir and _inside(os.path.realpath(folder), real):
                    yield _Skip(Path(p), "symlink loop (points to a folder that contains it), not followed")
                    continue
                if not settings.follow_symlinks:
                    continue
                if is_dir:
                    deferred.append((p, parts))
                else:
                    yield p
                continue
            if is_dir:
                real = os.path.realpath(p)
                if real in visited:  # bind mounts can loop too
                    continue
                visited.add(real)
                stack.append((p, parts))
            else:
                try:
                    regular = entry.is_file(follow_symlinks=False)
                except OSError:
                    continue
                if regular:
                    yield p


def _special_kind(path: str) -> str | None:
    """What a FIFO, socket or device is (a symlink: what it points at), else None."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing, or a broken link: reported where links are
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return None


def _broken_link_reason(path: str) -> str:
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop (the link resolves to itself)"
    return "broken symlink (target missing)"


def _glob_base(pattern: str) -> tuple[Path, list[str]]:
    """A glob's base folder (its parts before the first wildcard, else ``.``) and the
    pattern segments that follow it."""
    parts = Path(pattern).parts
    n = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts))
    return (Path(*parts[:n]) if n else Path(".")), list(parts[n:])


def _glob(pattern: str, settings: ReaderSettings) -> tuple[Path, list[str | _Skip]]:
    """Expand a glob with our own walker: ``glob.glob`` follows symlink loops under
    ``**`` and would also escape the root through symlinks."""
    root, segs = _glob_base(pattern)
    if ".." in segs:
        # The walk never yields '..', so it could match nothing; say why instead.
        raise ValueError(f"'..' after a wildcard is not allowed in a glob (got {pattern!r}); put it before the first wildcard")
    if not root.is_dir():
        raise FileNotFoundError(f"glob base folder does not exist: {root} (from pattern {pattern!r})")
    hidden_ok = settings.include_hidden or any(s.startswith(".") for s in segs)
    matcher = _GlobMatcher(segs, settings.include_hidden)
    entries = list(
        _walk(root, settings, include_hidden=hidden_ok, want_dir=matcher.viable_dir, want_file=matcher.matches)
    )
    if not entries:
        raise FileNotFoundError(
            f"glob pattern matched no readable files: {pattern!r} (known suffixes: {known_suffixes()})"
        )
    return root, entries


def sync_scope(source: str | os.PathLike[str], settings: ReaderSettings | None = None) -> Callable[[str], bool]:
    """Which stored doc ids a source covers, for ``--sync full``: everything under a
    folder, a file and its parts or records, or the files under a glob's base folder
    that match the glob; every object under an object-store prefix. A stored document
    in scope and not read again is gone."""
    if is_object_uri(source):
        return object_scope(str(source))
    settings = settings or ReaderSettings()
    path = Path(source)
    src = os.fspath(source)
    if path.is_dir():
        base = file_id(path).rstrip("/") + "/"
        return lambda d: d.startswith(base)
    if path.exists() or path.is_symlink() or not _MAGIC.search(src):
        fid = file_id(path)
        return lambda d: d == fid or d.startswith(fid + "#")
    glob_root, segs = _glob_base(src)
    base = file_id(glob_root).rstrip("/") + "/"
    matcher = _GlobMatcher(segs, settings.include_hidden)

    def in_glob(d: str) -> bool:
        if not d.startswith(base):
            return False
        rel = d[len(base):]
        # The file's part of the id: a part or record suffix follows a '#'.
        return matcher.matches(tuple(rel.split("/"))) or ("#" in rel and matcher.matches(tuple(rel.rsplit("#", 1)[0].split("/"))))

    return in_glob


class _GlobMatcher:
    """Shell-style matching of relative path parts against pattern segments.

    ``**`` spans zero or more path parts; other segments match exactly one part via
    fnmatch (case-sensitive). As in the shell, wildcards do not match a leading dot.
    """

    def __init__(self, segs: list[str], include_hidden: bool) -> None:
        self.segs = segs
        self.include_hidden = include_hidden

    def _closure(self, states: Iterable[int]) -> set[int]:
        out = set()
        for i in states:
            out.add(i)
            while i < len(self.segs) and self.segs[i] == "**":
                i += 1
                out.add(i)
        return out

    def _seg_ok(self, seg: str, part: str) -> bool:
        if part.startswith(".") and not seg.startswith(".") and not self.include_hidden:
            return False
        return fnmatch.fnmatchcase(part, seg)

    def _run(self, parts: tuple[str, ...]) -> set[int]:
        states = self._closure({0})
        for part in parts:
            nxt = set()
            for i in states:
                if i >= len(self.segs):
                    continue
                seg = self.segs[i]
                if seg == "**":
                    if self.include_hidden or not part.startswith("."):
                        nxt.add(i)
                elif self._seg_ok(seg, part):
                    nxt.add(i + 1)
            states = self._closure(nxt)
            if not states:
                break
        return states

    def matches(self, parts: tuple[str, ...]) -> bool:
        return len(self.segs) in self._run(parts)

    def viable_dir(self, parts: tuple[str, ...]) -> bool:
        # A directory is worth entering if some segment is still left to match.
        return any(i < len(self.segs) for i in self._run(parts))
