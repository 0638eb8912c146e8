"""What the incremental Parquet export mirrors, and what it rewrites.

The export holds one Parquet file per (segment, strategy), a segment being
:data:`SEGMENT_ROWS` physical rows of one lance fragment. A lance fragment's data files
never change once written (an update or an upsert deletes the old rows and appends new
ones to a new fragment; compaction writes new fragments); what changes in place is its
deletion file. So a segment's rows are known from its fragment id (lance never reuses
one, not after a restore nor an overwrite) and which of its rows are live, and the
export compares exactly that with the marker of the previous export: a segment whose
fingerprint is unchanged keeps its files, the others are written again.

Which fragments changed is read from the table's manifest (pylance's fragment
metadata: data files, deletion file, row-id and version metadata), not from its rows:
the marker keeps a hash of each fragment's metadata, and only the fragments whose hash
moved, or that are new, have their row addresses (``_rowaddr = fragment << 32 |
offset``) and ``_row_last_updated_at_version`` scanned, 16 bytes a row of those
fragments. Scanning every fragment's, as the export once did, cost 0.17 s a run at
450,000 rows and grew with the table; a marker without the hashes (an older export), or
a table pylance cannot open, gets that whole scan. Reading a segment is a ``take`` of
its row ids, whose cost does not grow with the table (a ``_rowid`` range filter does)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Physical rows of a fragment per segment: at most what one deleted row costs to
# re-export (about 35 MB of 384-dim rows), against files per strategy (610 for 10M rows).
SEGMENT_ROWS = 16_384
# The marker's format; an export of another format is replaced whole.
FORMAT = 2
_SEG_BITS = 32  # room for 2**32 offsets // SEGMENT_ROWS segments whatever SEGMENT_ROWS is


@dataclass
class Segment:
    """The live rows of one segment of one fragment, and their fingerprint. ``row_ids``
    is None for a segment taken from the previous export's marker (its fragment did not
    change): :func:`with_row_ids` reads them if the segment has to be written after all."""

    fragment: int
    segment: int
    fingerprint: str
    row_ids: np.ndarray | None = field(repr=False)
    n_rows: int = -1

    def __post_init__(self) -> None:
        if self.n_rows < 0:
            self.n_rows = 0 if self.row_ids is None else len(self.row_ids)

    @property
    def key(self) -> tuple[int, int]:
        return (self.fragment, self.segment)

    @property
    def rows(self) -> int:
        return self.n_rows

    def file_name(self, strategy: str) -> str:
        """The file's path in the export: the name changes with the fingerprint, so a
        rewritten segment never overwrites the file a reader may be reading."""
        return f"strategy={strategy}/frag-{self.fragment:06d}-{self.segment:04d}-{self.fingerprint}.parquet"


def schema_fingerprint(schema: pa.Schema) -> str:
    """Columns and types: adding or altering a column changes every fragment in place."""
    text = schema.to_string(show_field_metadata=False, show_schema_metadata=False)
    return hashlib.blake2b(f"{FORMAT}/{SEGMENT_ROWS}/{text}".encode(), digest_size=8).hexdigest()


_COLUMNS = ["_rowaddr", "_row_last_updated_at_version"]


def _scan(table: Any) -> pa.RecordBatchReader:
    try:
        return table.search().select(_COLUMNS).with_row_id(True).limit(None).to_batches()
    except Exception:  # noqa: BLE001 - a table whose format keeps no row versions
        return table.search().select(_COLUMNS[:1]).with_row_id(True).limit(None).to_batches()


class _OutOfOrder(Exception):
    """The scan did not come in row-address order."""


class _Open:
    """A segment being read: its fingerprint so far, and its row ids."""

    def __init__(self, schema_fp: str, key: int, fragment: int, segment: int) -> None:
        self.key, self.fragment, self.segment = key, fragment, segment
        self.prefix = f"{schema_fp}/{fragment}/{segment}/".encode()
        # Two hashes, so that the fingerprint is the same however the scan cuts batches.
        self.offsets = hashlib.blake2b(digest_size=16)
        self.versions = hashlib.blake2b(digest_size=16)
        self.ids: list[np.ndarray] = []
        self.last = -1

    def add(self, offset: np.ndarray, upd: np.ndarray, rid: np.ndarray) -> None:
        if int(offset[0]) <= self.last:
            raise _OutOfOrder
        self.last = int(offset[-1])
        self.offsets.update(offset.astype("<u4").tobytes())
        self.versions.update(upd.astype("<u8").tobytes())
        self.ids.append(rid.copy())

    def close(self) -> Segment:
        fp = hashlib.blake2b(self.prefix + self.offsets.digest() + self.versions.digest(), digest_size=8).hexdigest()
        return Segment(self.fragment, self.segment, fp, np.concatenate(self.ids) if self.ids else np.array([], np.uint64))


def _segments_of(batches: Any, schema_fp: str, in_order: bool) -> list[Segment]:
    out: list[Segment] = []
    closed: set[int] = set()
    cur: _Open | None = None
    for b in batches:
        if b.num_rows == 0:
            continue
        names = b.schema.names

        def column(name: str) -> np.ndarray:
            return b.column(names.index(name)).to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)

        addr, rid = column("_rowaddr"), column("_rowid")
        upd = column(_COLUMNS[1]) if _COLUMNS[1] in names else np.zeros(len(addr), np.uint64)
        if in_order and len(addr) > 1 and not bool(np.all(addr[1:] > addr[:-1])):
            raise _OutOfOrder
        frag = addr >> np.uint64(32)
        offset = addr & np.uint64(0xFFFFFFFF)
        seg = offset // np.uint64(SEGMENT_ROWS)
        key = (frag << np.uint64(_SEG_BITS)) | seg
        starts = np.concatenate(([0], np.flatnonzero(np.diff(key)) + 1))
        ends = np.concatenate((starts[1:], [len(key)]))
        for s, e in zip(starts.tolist(), ends.tolist()):
            k = int(key[s])
            if cur is None or cur.key != k:
                if cur is not None:
                    out.append(cur.close())
                    closed.add(cur.key)
                if k in closed:
                    raise _OutOfOrder
                cur = _Open(schema_fp, k, int(frag[s]), int(seg[s]))
            cur.add(offset[s:e], upd[s:e], rid[s:e])
    if cur is not None:
        out.append(cur.close())
    return out


def _dataset(table: Any) -> Any | None:
    """The pylance dataset of ``table`` at the table's version, or None when pylance
    cannot open it there."""
    try:
        ds = table.to_lance()
    except Exception:  # noqa: BLE001 - the export then scans every fragment's rows
        return None
    return ds if getattr(table, "version", ds.version) == ds.version else None


def fragment_fingerprints(ds: Any, schema_fp: str) -> dict[str, str] | None:
    """Fragment id (as a string: the marker is JSON) -> a hash of the fragment's whole
    metadata, from the dataset's manifest (no data file is opened); None when its
    fragments cannot be listed."""
    try:
        out = {}
        for frag in ds.get_fragments():
            text = json.dumps(frag.metadata.to_json(), sort_keys=True, default=str)
            out[str(frag.fragment_id)] = hashlib.blake2b(f"{schema_fp}/{text}".encode(), digest_size=8).hexdigest()
        return out
    except Exception:  # noqa: BLE001 - the export then scans every fragment's rows
        return None


def live_segments(table: Any, schema_fp: str, marker: dict | None = None) -> tuple[list[Segment], dict[str, str] | None]:
    """The table's segments that hold live rows, in fragment order, and the fragments'
    fingerprints (:func:`fragment_fingerprints`, for the next marker). The segments of a
    fragment whose fingerprint is the one ``marker`` (the previous export's) recorded
    are taken from the marker, unread (``row_ids`` None); the other fragments' rows are
    scanned. Streamed: what stays in memory is 8 bytes a live row scanned."""
    ds = _dataset(table)
    fps = None if ds is None else fragment_fingerprints(ds, schema_fp)
    before = marker.get("fragments") if isinstance(marker, dict) and marker.get("format") == FORMAT \
        and marker.get("schema") == schema_fp and isinstance(marker.get("segments"), list) else None
    if fps is None or not isinstance(before, dict):
        return _all_segments(table, schema_fp), fps
    same = {int(k) for k, v in fps.items() if before.get(k) == v}
    kept = [Segment(int(m["fragment"]), int(m["segment"]), str(m["fingerprint"]), None, int(m["rows"]))
            for m in marker["segments"]
            if isinstance(m, dict) and m.get("fragment") in same and isinstance(m.get("rows"), int)
            and isinstance(m.get("segment"), int) and isinstance(m.get("fingerprint"), str)]
    changed = sorted(int(k) for k in fps if int(k) not in same)
    return sorted(kept + _fragment_segments(ds, schema_fp, changed), key=lambda seg: seg.key), fps


def _all_segments(table: Any, schema_fp: str) -> list[Segment]:
    try:
        return _segments_of(_scan(table), schema_fp, in_order=True)
    except _OutOfOrder:
        # A scan out of row-address order (not seen with LanceDB 0.40): sort it whole.
        return _segments_sorted(_scan(table).read_all(), schema_fp)


def _fragment_segments(ds: Any, schema_fp: str, fragments: list[int]) -> list[Segment]:
    """The segments of these fragments of the dataset only, from a scan of their row
    addresses."""
    if not fragments:
        return []
    frags = [f for f in (ds.get_fragment(i) for i in fragments) if f is not None]

    def scan(columns: list[str]) -> Any:
        return ds.scanner(columns=columns, with_row_id=True, fragments=frags, scan_in_order=True).to_batches()

    columns = _COLUMNS
    try:
        batches = scan(columns)
    except Exception:  # noqa: BLE001 - a table whose format keeps no row versions
        columns = _COLUMNS[:1]
        batches = scan(columns)
    try:
        return _segments_of(batches, schema_fp, in_order=True)
    except _OutOfOrder:
        return _segments_sorted(pa.Table.from_batches(list(scan(columns))), schema_fp)


def with_row_ids(table: Any, schema_fp: str, segments: list[Segment]) -> list[Segment]:
    """``segments`` with their row ids: those taken from the marker unread are read now
    from a scan of their fragments (a kept segment whose files went missing)."""
    missing = sorted({s.fragment for s in segments if s.row_ids is None})
    if not missing:
        return segments
    scanned = {s.key: s for s in _fragment_segments(table.to_lance(), schema_fp, missing)}
    return [scanned[s.key] if s.row_ids is None else s for s in segments if s.row_ids is not None or s.key in scanned]


def _segments_sorted(got: pa.Table, schema_fp: str) -> list[Segment]:
    order = pc.sort_indices(got, sort_keys=[("_rowaddr", "ascending")])
    return _segments_of(got.take(order).to_batches(), schema_fp, in_order=True)


@dataclass
class Plan:
    """What an export keeps from the previous one and what it writes; ``full`` names
    why nothing is kept, when nothing is."""

    keep: list[tuple[Segment, list[str]]]
    write: list[Segment]
    full: str | None


def plan(segments: list[Segment], marker: dict | None, schema_fp: str, version: int | None) -> Plan:
    """Compare the table's segments with the previous export's marker (no Parquet file
    is read): a segment with the same fingerprint keeps its files."""
    reason = None
    if marker is None:
        reason = "no previous export"
    elif marker.get("format") != FORMAT or not isinstance(marker.get("segments"), list):
        reason = "the previous export is of an older format"
    elif marker.get("schema") != schema_fp:
        reason = "the table's columns changed"
    elif version is not None and isinstance(marker.get("version"), int) and marker["version"] > version:
        reason = f"the export holds version {marker['version']}, newer than the table's {version}"
    if reason:
        return Plan([], list(segments), reason)
    before = {(s.get("fragment"), s.get("segment")): s for s in marker["segments"] if isinstance(s, dict)}
    keep, write = [], []
    for seg in segments:
        old = before.get(seg.key)
        if old and old.get("fingerprint") == seg.fingerprint and old.get("rows") == seg.rows \
                and isinstance(old.get("files"), list):
            keep.append((seg, [str(f) for f in old["files"]]))
        else:
            write.append(seg)
    return Plan(keep, write, None)


def marker_segments(done: list[tuple[Segment, list[str]]]) -> list[dict]:
    """The marker's listing: each segment's fingerprint, rows and files."""
    return [{"fragment": s.fragment, "segment": s.segment, "fingerprint": s.fingerprint, "rows": s.rows,
             "files": sorted(files)} for s, files in sorted(done, key=lambda d: d[0].key)]
