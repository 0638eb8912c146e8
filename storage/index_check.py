"""The part of ``grainline check`` that reads every index and every file a table's
manifest names: an index is derived data, so a damaged one is reported (and
``grainline check --repair`` rebuilds it, ``storage/repair.py``); a damaged data file
is not derivable and is reported for ``grainline restore``.

For each index of a table (vector, full-text, scalar), each segment (the index and
its deltas):

- ``files``: locally, the segment's folder ``_indices/<uuid>/`` exists, every file in
  it reads to its end and ends with Lance's footer, and the files hold the bytes the
  manifest records for the segment (a file deleted, cut short or replaced by one of
  another size shows there);
- ``use``: the index answers a query through it, checked against the rows: a vector
  index finds a row's own vector at distance 0 (every partition probed), the full-text
  index finds a row by its longest word, a scalar index finds exactly the rows holding
  a value, and its recorded range of values covers the rows it indexes (a file of
  another table's index, the same size as the right one, shows there).

Data files: every file of every fragment the manifest names exists, reads to its end
and ends with Lance's footer.

Each damage is one :class:`grainline.storage.check.Problem` of kind ``index`` (or
``open`` for a data file) naming the table, the index, the file and the reason."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .problem import LANCE_FOOTER, Problem, first_line
from .lock_protocol import is_local
from .sql import quote

# A vector found through the index is the row's own when its cosine distance is below this.
SAME_VECTOR = 1e-3
# Rows per index segment whose lookup through the index is checked.
SAMPLES = 3
_INDEX_FILE = re.compile(r"_indices/([0-9a-f-]{36})/([^\s,'\"]+)")
_OBJECT_SIZE = re.compile(r"for object of size (\d+) bytes")


def index_kind(desc: Any) -> str:
    """``vector``, ``full-text`` or ``scalar``: what an index is, from Lance's description."""
    t = (getattr(desc, "type_url", "") or "") + " " + (getattr(desc, "index_type", "") or "")
    if "Vector" in t or "IVF" in t.upper() or "HNSW" in t.upper():
        return "vector"
    if "Inverted" in t or "FTS" in t.upper():
        return "full-text"
    return "scalar"


@dataclass(frozen=True)
class IndexDamage:
    """One damaged index: which, of what kind, the file (or folder) and why."""

    table: str
    index: str
    kind: str
    file: str
    reason: str
    column: str = ""

    def problem(self) -> Problem:
        return Problem("index", self.table, f"index {self.index} ({self.kind}): {self.file}", self.reason)


def table_dir(db_uri: str, name: str) -> Path | None:
    """The table's folder on this machine, or None for an object store."""
    if not is_local(db_uri):
        return None
    return Path(db_uri.removeprefix("file://")) / f"{name}.lance"


def check_data_files(db_uri: str, name: str, ds: Any) -> Iterator[Problem]:
    """Every data and deletion file the current version's manifest names: present,
    readable to the end, and (data files) ending with Lance's footer."""
    root = table_dir(db_uri, name)
    if root is None:
        return
    for frag in ds.get_fragments():
        md = frag.metadata
        for f in md.files:
            path = root / "data" / f.path
            why = _unreadable(path, footer=True)
            if why:
                yield Problem("open", name, str(path), f"data file of fragment {md.id} {why}")
        dele = md.deletion_file
        if dele is not None:
            path = root / "_deletions" / _deletion_name(md.id, dele)
            if path.parent.is_dir() and not any(path.parent.glob(f"{md.id}-{dele.read_version}-{dele.id}.*")):
                yield Problem("open", name, str(path), f"deletion file of fragment {md.id} is missing")


# Lance names a version's manifest u64::MAX - version (so the newest sorts first).
_U64_MAX = 2**64 - 1
# Where ``grainline check --repair`` sets a damaged manifest aside (out of Lance's sight).
DAMAGED_DIR = "_damaged"


def manifest_version(path: Path) -> int | None:
    """The version a manifest file holds, from its name (``<u64::MAX - v>.manifest``,
    or ``<v>.manifest`` in Lance's older naming)."""
    stem = path.stem
    if not stem.isdigit():
        return None
    n = int(stem)
    return _U64_MAX - n if n > _U64_MAX // 2 else n


def damaged_manifests(db_uri: str, name: str) -> list[tuple[Path, int, str]]:
    """(file, version, why) for each manifest under ``_versions/`` that does not read to
    a Lance footer (cut short, zeroed, emptied)."""
    root = table_dir(db_uri, name)
    if root is None or not (root / "_versions").is_dir():
        return []
    out = []
    for f in sorted((root / "_versions").glob("*.manifest")):
        v = manifest_version(f)
        why = _unreadable(f, footer=True)
        if why and v is not None:
            out.append((f, v, why.replace("is named by the manifest but missing", "is missing")))
    return out


def check_manifests(db_uri: str, name: str) -> list[Problem]:
    """One ``manifest`` problem per damaged manifest, naming the newest version whose
    manifest is whole (what ``check --repair`` makes current when the newest is damaged)."""
    bad = damaged_manifests(db_uri, name)
    if not bad:
        return []
    root = table_dir(db_uri, name)
    assert root is not None
    whole = sorted(v for f in (root / "_versions").glob("*.manifest")
                   if (v := manifest_version(f)) is not None and v not in {b[1] for b in bad})
    out = []
    for f, v, why in bad:
        newest = whole and v > whole[-1]
        then = (f"`grainline check --repair` sets it aside so version {whole[-1]}, the newest whole one, is current "
                f"(then `grainline restore` an older one if need be)" if newest and whole else
                "`grainline check --repair` sets it aside (that version is lost; the others stay)")
        out.append(Problem("manifest", name, f"_versions/{f.name} (version {v})", f"{why}; {then}"))
    return out


def versions_using(db_uri: str, name: str, file: str) -> list[int]:
    """The versions kept whose manifest names the data file ``file`` (by its name)."""
    from .lance_import import import_lance

    root = table_dir(db_uri, name)
    if root is None:
        return []
    lance = import_lance()
    fname = Path(file).name
    out = []
    for v in sorted(int(x["version"]) for x in lance.dataset(str(root)).versions()):
        try:
            ds = lance.dataset(str(root), version=v)
            if any(df.path == fname for f in ds.get_fragments() for df in f.metadata.files):
                out.append(v)
        except Exception:  # noqa: BLE001 - a version that does not open names no file we can see
            continue
    return out


def history_problem(db_uri: str, name: str, file: str) -> Problem:
    """A damaged data file the current version does not use (a restore, or a rewrite,
    left it behind): only the older versions that name it are lost."""
    vs = versions_using(db_uri, name, file)
    which = (f"used only by version{'s' if len(vs) > 1 else ''} {version_ranges(vs)}, not the current one: "
             f"{'those versions' if len(vs) > 1 else 'that version'} cannot be read or restored" if vs else
             "named by no version kept (a write that never committed)")
    return Problem("history", name, file, f"data file truncated (no Lance footer), {which}; "
                   "`grainline check --repair` sets it aside")


def version_ranges(vs: list[int]) -> str:
    """Versions as runs: ``1, 3..5, 8``."""
    out: list[str] = []
    for v in sorted(vs):
        if out and out[-1].split("..")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('..')[0]}..{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def _deletion_name(frag_id: int, dele: Any) -> str:
    ext = "arrow" if "ARROW" in str(getattr(dele, "file_type", "")).upper() else "bin"
    return f"{frag_id}-{dele.read_version}-{dele.id}.{ext}"


def _unreadable(path: Path, footer: bool) -> str | None:
    """Why the file cannot serve (missing, unreadable, cut short), or None."""
    try:
        with open(path, "rb") as fh:
            size = 0
            while chunk := fh.read(1 << 20):
                size += len(chunk)
                tail = chunk[-len(LANCE_FOOTER):]
    except FileNotFoundError:
        return "is named by the manifest but missing"
    except OSError as exc:
        return f"cannot be read: {first_line(exc)}"
    if footer and (size < len(LANCE_FOOTER) or tail != LANCE_FOOTER):
        return "is truncated or overwritten (no Lance footer)" if size else "is empty"
    return None


def check_indexes(db_uri: str, name: str, table: Any) -> list[IndexDamage]:
    """Every index of ``table`` read and used once; the damaged ones, one entry each
    (the first damage found in an index names it: a repair rebuilds the whole index)."""
    try:
        ds = table.to_lance()
        descs = ds.describe_indices()
    except Exception as exc:  # noqa: BLE001 - the manifest's index section does not read
        return [IndexDamage(name, "(all)", "manifest", "index list", f"cannot be read: {first_line(exc)}")]
    return damaged_in(db_uri, name, ds, descs)


def damaged_in(db_uri: str, name: str, ds: Any, descs: list[Any]) -> list[IndexDamage]:
    """The damaged ones among the indexes ``descs`` of the dataset ``ds``."""
    out = []
    for desc in descs:
        damage = _index_damage(db_uri, name, ds, desc)
        if damage is not None:
            out.append(damage)
    return out


def _index_damage(db_uri: str, name: str, ds: Any, desc: Any) -> IndexDamage | None:
    from dataclasses import replace

    d = _first_damage(db_uri, name, ds, desc)
    return None if d is None else replace(d, column=(desc.field_names or [""])[0])


def _first_damage(db_uri: str, name: str, ds: Any, desc: Any) -> IndexDamage | None:
    kind = index_kind(desc)
    root = table_dir(db_uri, name)
    segments = list(getattr(desc, "segments", []) or [])
    found = None
    if root is not None:
        for seg in segments:
            found = _segment_files(root, seg)
            if found is not None:
                break
    if found is not None and not found[0].endswith("/"):
        return IndexDamage(name, desc.name, kind, found[0], found[1])
    try:
        reason = _probe(ds, desc, kind)
    except Exception as exc:  # noqa: BLE001 - whatever Lance raises, the index does not serve
        file = _file_in(str(exc), root, segments)
        if "Not found" in str(exc) and file.count("/") > 1:
            return IndexDamage(name, desc.name, kind, file, "is missing")
        if found is not None:  # the sizes disagree: the file Lance tripped on is the one replaced
            return IndexDamage(name, desc.name, kind, file if file.count("/") > 1 else found[0].rstrip("/"), found[1])
        return IndexDamage(name, desc.name, kind, file, f"does not answer a query: {first_line(exc)}")
    if found is not None:
        return IndexDamage(name, desc.name, kind, found[0].rstrip("/"), found[1])
    if reason:
        return IndexDamage(name, desc.name, kind, _segment_dir(segments), reason)
    return None


def _segment_dir(segments: list[Any]) -> str:
    return f"_indices/{segments[0].uuid}" if segments else "_indices"


def _segment_files(root: Path, seg: Any) -> tuple[str, str] | None:
    """(file, reason) for the first damage found in one segment's folder, or None."""
    folder = root / "_indices" / seg.uuid
    rel = f"_indices/{seg.uuid}"
    if not folder.is_dir():
        return rel, "the index folder the manifest names is missing"
    total = 0
    for f in sorted(folder.iterdir()):
        why = _unreadable(f, footer=f.suffix in (".lance", ".idx"))
        if why:
            return f"{rel}/{f.name}", why.replace("is named by the manifest but missing", "is missing")
        total += f.stat().st_size
    want = getattr(seg, "size_bytes", None)
    if want is not None and total != want:
        # A trailing "/": the folder, not one file, is named (the caller may find which).
        return rel + "/", (f"its files hold {total} bytes, the manifest records {want} "
                     "(a file missing, or replaced by one of another index)")
    return None


def _file_in(message: str, root: Path | None, segments: list[Any]) -> str:
    """The index file a Lance error names (by path, or by its size), else the folder."""
    m = _INDEX_FILE.search(message)
    if m:
        return f"_indices/{m.group(1)}/{m.group(2)}"
    m = _OBJECT_SIZE.search(message)
    if m and root is not None:
        for seg in segments:
            for f in sorted((root / "_indices" / seg.uuid).glob("*")):
                if f.is_file() and f.stat().st_size == int(m.group(1)):
                    return f"_indices/{seg.uuid}/{f.name}"
    return _segment_dir(segments)


def _samples(ds: Any, seg_fragments: set[int], columns: list[str]) -> list[dict[str, Any]]:
    """A few rows the segment covers: the first, middle and last of its first fragment
    that still holds rows, and the last of its last."""
    rows: list[dict[str, Any]] = []
    frags = [f for f in ds.get_fragments() if f.fragment_id in seg_fragments]
    for frag in (frags[:1] + frags[-1:]) if frags else []:
        n = frag.count_rows()
        if not n:
            continue
        for off in sorted({0, n // 2, n - 1}):
            rows += frag.to_table(columns=columns, offset=off, limit=1).to_pylist()
        if len(rows) >= SAMPLES:
            break
    return rows


def _probe(ds: Any, desc: Any, kind: str) -> str | None:
    """Why the index answers wrong (None when it answers right); raises when it does not
    answer at all."""
    column = desc.field_names[0]
    covered: set[int] = set()
    for seg in getattr(desc, "segments", []) or []:
        covered |= set(seg.fragment_ids)
    if kind == "vector":
        return _probe_vector(ds, desc.name, column, covered)
    if kind == "full-text":
        return _probe_fts(ds, desc.name, column, covered)
    return _probe_scalar(ds, desc.name, column, covered)


def _probe_vector(ds: Any, index: str, column: str, covered: set[int]) -> str | None:
    stats = ds.stats.index_stats(index)
    parts = max((int(ix.get("num_partitions") or 1) for ix in stats.get("indices", [])), default=1)
    id_col = "chunk_id" if "chunk_id" in ds.schema.names else None
    for row in _samples(ds, covered, [column] + ([id_col] if id_col else [])):
        got = ds.to_table(columns=[id_col] if id_col else [], with_row_id=id_col is None,
                          nearest={"column": column, "q": row[column], "k": 1, "nprobes": parts, "refine_factor": 4,
                                   "use_index": True}).to_pylist()
        if not got or float(got[0]["_distance"]) > SAME_VECTOR:
            who = f"row {row[id_col]}" if id_col else "a row"
            return (f"does not find {who} by its own vector (nearest distance "
                    f"{float(got[0]['_distance']):.3f} through the index; 0 in the data)" if got else
                    f"finds nothing for {who}'s own vector")
    return None


_WORD = re.compile(r"[A-Za-z]{4,}")


def _probe_fts(ds: Any, index: str, column: str, covered: set[int]) -> str | None:
    ds.stats.index_stats(index)  # reads the index's metadata
    id_col = "chunk_id" if "chunk_id" in ds.schema.names else None
    if id_col is None:
        return None
    for row in _samples(ds, covered, [column, id_col]):
        words = sorted(_WORD.findall(row[column] or ""), key=lambda w: (-len(w), w))
        if not words:
            continue
        got = ds.to_table(columns=[id_col], full_text_query=words[0], filter=f"{id_col} = {quote(row[id_col])}",
                          prefilter=True).to_pylist()
        if not any(r[id_col] == row[id_col] for r in got):
            return f"does not find row {row[id_col]} by its word {words[0]!r}"
    return None


def _probe_scalar(ds: Any, index: str, column: str, covered: set[int]) -> str | None:
    stats = ds.stats.index_stats(index)
    ranges = [(s["min"], s["max"]) for s in stats.get("segments") or stats.get("indices") or []
              if s.get("min") is not None and s.get("max") is not None]
    # The smallest and largest values the covered rows hold: an index whose recorded range
    # leaves one out cannot find it (a page lookup of another table's index, narrower
    # than this one's, shows only there; a few sampled rows would miss it).
    lo, hi = _column_range(ds, column, covered)
    if ranges and lo is not None and (lo < min(r[0] for r in ranges) or hi > max(r[1] for r in ranges)):
        return (f"holds values from {str(min(r[0] for r in ranges))[:60]!r} to {str(max(r[1] for r in ranges))[:60]!r}, "
                f"but the rows it covers hold {str(lo)[:60]!r} to {str(hi)[:60]!r} (a file of another table's index?)")
    extremes = [{column: v} for v in (lo, hi) if v is not None]
    for row in extremes + _samples(ds, covered, [column]):
        value = row[column]
        if value is None:
            continue
        if ranges and not any(lo is not None and hi is not None and lo <= value <= hi for lo, hi in ranges):
            return (f"holds values from {str(ranges[0][0])[:60]!r} to {str(ranges[0][1])[:60]!r}, but a row it covers "
                    f"holds {str(value)[:60]!r} (a file of another table's index?)")
        lit = quote(value) if isinstance(value, str) else repr(value)
        via = ds.to_table(columns=[column], filter=f"{column} = {lit}", use_scalar_index=True).num_rows
        exact = ds.to_table(columns=[column], filter=f"{column} = {lit}", use_scalar_index=False).num_rows
        if via != exact:
            return f"finds {via} rows holding {str(value)[:60]!r}, the data {exact}"
    return None


def _column_range(ds: Any, column: str, covered: set[int]) -> tuple[Any, Any]:
    """(min, max) of ``column`` over the rows of the fragments ``covered``; (None, None)
    when they hold no value."""
    import pyarrow.compute as pc

    lo = hi = None
    for frag in ds.get_fragments():
        if frag.fragment_id not in covered:
            continue
        for batch in frag.to_batches(columns=[column]):
            mm = pc.min_max(batch.column(0))
            a, b = mm["min"].as_py(), mm["max"].as_py()
            if a is not None:
                lo = a if lo is None or a < lo else lo
                hi = b if hi is None or b > hi else hi
    return lo, hi


# The ledger's flow name of a ``grainline check --repair`` run (``storage/repair.py``).
REPAIR_FLOW = "repair"


def unfinished_repairs(runs: list[dict[str, Any]], name: str, table: Any) -> list[IndexDamage]:
    """Indexes a repair run of ``name`` set out to rebuild, did not finish (killed), and
    that the table still lacks."""
    import json

    have = {getattr(ix, "name", None) for ix in table.list_indices()}
    out: dict[str, IndexDamage] = {}
    for r in runs:
        if r.get("flow") != REPAIR_FLOW or r.get("table_name") != name or r.get("status") == "completed":
            continue
        try:
            params = json.loads(r.get("parameters") or "{}") if isinstance(r.get("parameters"), str) else (r.get("parameters") or {})
        except ValueError:
            continue
        for ix in params.get("indexes", []):
            if ix["index"] not in have and ix["index"] not in out:
                out[ix["index"]] = IndexDamage(name, ix["index"], ix["kind"], "-", f"dropped by repair run {r['run_id']}, "
                                               "which did not finish; `grainline check --repair` builds it",
                                               column=ix.get("column", ""))
    return list(out.values())
