"""Table maintenance after a run: compact small fragments, prune old versions (never
tagged ones, never the newest few), build or refresh the vector index (IVF_PQ, only
on tables large enough to train it) and the full-text (BM25) index, and report the
figures the ledger keeps: fragments, versions, rows the vector index does not cover.

Every step costs what changed since the last pass, not the table: LanceDB 0.40's
``optimize()`` merges each index's new rows into one segment (rewriting the index) and
compacts every fragment under a million rows, 6 s after a ten-row change at 400k rows;
here compaction stops at ``compact_target_rows``, new rows go into each index as a delta
of their own (Lance's ``optimize_indices(num_indices_to_merge=0)``: 0.04 s at 400k
rows), and the deltas are merged once there are ``max_index_deltas`` of them."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from grainline.memory import release_memory

from .lance_import import import_lance, import_lancedb

log = logging.getLogger("grainline.maintenance")

# Vector indexes grainline builds are named with the row count they were trained on,
# so maintenance can tell when the table has outgrown the index's partitions.
VECTOR_INDEX_PREFIX = "vector_ivfpq_rows"
FTS_INDEX = "text_idx"
# Scalar indexes grainline keeps on the chunks table (column -> index name).
SCALAR_INDEXES = {"doc_id": "doc_id_idx", "content_hash": "content_hash_idx"}
# Fragments grow to this many rows by compaction (128k rows: about 200 MiB of 384-d
# vectors and text); bigger ones are never rewritten by it.
COMPACT_TARGET_ROWS = 131_072
MAX_INDEX_DELTAS = 16
# A fragment with more than this share of its rows deleted is rewritten by compaction.
MATERIALIZE_DELETIONS = 0.3
# Product quantisation trains 256 centroids per sub-vector (8 bits), and IVF training
# wants about that many rows per partition: fewer rows cannot train an index.
PQ_MIN_ROWS = 256
# Training samples (rows per IVF partition, rows per PQ centroid). LanceDB trains on
# 256 of each, whose k-means held most of a build's memory and two minutes of its time
# at 200k rows; 64 trains in a quarter of the memory, and the build's recall@10 against
# exact search stays where it was (docs/benchmark.md, "Index builds").
IVF_SAMPLE_PER_PARTITION = 64
PQ_SAMPLE_PER_CENTROID = 64
# Lance measures the prune window from its own clock, a moment after ours; a cut-off
# this much earlier keeps a tagged (or kept) version from falling inside the window.
_CLOCK_MARGIN = timedelta(seconds=1)
# "Prune nothing": a window longer than any table has lived.
_NEVER = timedelta(days=365 * 100)


class MaintenanceSettings(BaseModel):
    """What maintenance does after a run (and with ``grainline maintain``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True  # run after every successful ingestion
    # LanceDB optimize: merge small fragments, prune, fold new rows into the indexes.
    compact: bool = True
    prune: bool = True
    prune_older_than_days: float = Field(default=7.0, ge=0)
    keep_versions: int = Field(default=10, ge=1)  # the newest N versions always stay
    vector_index: bool = True
    min_rows_for_index: int = Field(default=PQ_MIN_ROWS, ge=PQ_MIN_ROWS)
    # Train the index again once the table holds this many times the rows it was trained on.
    retrain_growth: float = Field(default=2.0, gt=1.0)
    fts_index: bool = True
    # Scalar (BTREE) indexes on doc_id and content_hash: a changed document's rows and
    # a chunk text's stored vector are found through them, not by a scan of the table.
    scalar_indexes: bool = True
    # Compaction merges fragments smaller than this many rows (the small fragments a
    # run's batches write) and never rewrites a fragment that has reached it, so a
    # pass rewrites what the runs since the last one wrote, not the table.
    compact_target_rows: int = Field(default=COMPACT_TARGET_ROWS, ge=1024)
    # New rows go into each index as a delta of their own (a cost in proportion to
    # them); once an index has more deltas than this, they are merged into one (a
    # cost in proportion to the index, paid once every so many changing runs).
    max_index_deltas: int = Field(default=MAX_INDEX_DELTAS, ge=1)
    # Evaluation tags (``eval-...``) older than this are deleted, so pruning can pass
    # them; None keeps them (and the versions from the oldest one on) for ever.
    drop_eval_tags_older_than_days: float | None = Field(default=None, ge=0)


@dataclass
class TableFigures:
    """What a table looks like on disk."""

    rows: int
    fragments: int
    small_fragments: int
    versions: int
    unindexed_rows: int  # rows the vector index does not cover (all of them without one)
    vector_index: str | None


@dataclass
class MaintenanceReport:
    """What one maintenance pass found and did."""

    table: str
    before: TableFigures
    after: TableFigures
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    version_after: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def vector_index(table: Any) -> Any | None:
    """The IVF_PQ index grainline built on ``vector``, or None."""
    for ix in table.list_indices():
        if "vector" in ix.columns and str(ix.index_type).lower().replace("_", "") == "ivfpq":
            return ix
    return None


def figures(table: Any, versions: list[dict] | int | None = None) -> TableFigures:
    """Rows, fragments, versions and unindexed rows of the table's current version.
    ``versions``: the table's version list (or its length) when the caller has it
    already (each read of the list opens every version's manifest: 1.2 s at 1,600
    versions of a 450k-row table)."""
    st = table.stats()
    frag = st["fragment_stats"] if isinstance(st, dict) else st.fragment_stats
    frag = frag if isinstance(frag, dict) else asdict(frag)
    rows = int(st["num_rows"] if isinstance(st, dict) else st.num_rows)
    ix = vector_index(table)
    unindexed = rows
    if ix is not None:
        stats = table.index_stats(ix.name)
        unindexed = int(stats.num_unindexed_rows) if stats is not None else rows
    return TableFigures(
        rows=rows, fragments=int(frag["num_fragments"]), small_fragments=int(frag["num_small_fragments"]),
        versions=versions if isinstance(versions, int) else len(versions if versions is not None else table.list_versions()),
        unindexed_rows=unindexed, vector_index=ix.name if ix is not None else None,
    )


def index_params(rows: int, dim: int) -> tuple[int, int]:
    """(num_partitions, num_sub_vectors) for an IVF_PQ index over ``rows`` vectors of ``dim``.

    Partitions: the usual sqrt(rows), but never fewer than 256 rows per partition, which
    k-means needs to train each one. Sub-vectors of 8 dimensions (SIMD-friendly, and
    finer than LanceDB's default of 16, for recall); one sub-vector when dim is odd-sized."""
    partitions = max(1, min(round(math.sqrt(rows)), rows // PQ_MIN_ROWS))
    sub_vectors = dim // 8 if dim % 8 == 0 else (dim // 4 if dim % 4 == 0 else 1)
    return partitions, max(1, sub_vectors)


def trained_rows(index_name: str) -> int | None:
    """The row count a grainline vector index was trained on, read from its name."""
    prefix = VECTOR_INDEX_PREFIX + "_"
    if index_name.startswith(prefix) and index_name[len(prefix):].isdigit():
        return int(index_name[len(prefix):])
    return None


def prune_window(table: Any, settings: MaintenanceSettings, now: datetime | None = None,
                 versions: list[dict] | None = None) -> tuple[timedelta, str]:
    """How old a version must be to be pruned, and why it is that old.

    The cut-off is the earliest of: ``prune_older_than_days`` ago, the newest
    ``keep_versions``-th version, and the oldest tagged version. LanceDB 0.40 refuses
    to prune at all when a tagged version falls in the window (its Python API cannot
    ask it to skip them), so nothing at or after the oldest tag is pruned."""
    if not settings.prune:
        return _NEVER, "pruning off"
    now = now or datetime.now()  # version timestamps are naive local time
    versions = versions if versions is not None else table.list_versions()
    cutoff, why = now - timedelta(days=settings.prune_older_than_days), f"older than {settings.prune_older_than_days:g} days"
    if len(versions) >= settings.keep_versions:
        kept_from = versions[-settings.keep_versions]["timestamp"]
        if kept_from < cutoff:
            cutoff, why = kept_from, f"keeping the newest {settings.keep_versions} versions"
    else:
        return _NEVER, f"fewer than {settings.keep_versions} versions"
    by_version = {v["version"]: v["timestamp"] for v in versions}
    tagged = [(by_version[t["version"]], name) for name, t in table.tags.list().items() if t["version"] in by_version]
    if tagged:
        oldest, name = min(tagged)
        if oldest <= cutoff:
            cutoff, why = oldest, f"kept from tagged version {name!r} on"
    return max(now - cutoff, timedelta(0)) + _CLOCK_MARGIN, why


@dataclass(frozen=True)
class ManifestListing:
    """A local table's version manifests as its folder lists them: how many, and when
    the oldest was written; no manifest is opened."""

    count: int
    oldest_written: datetime  # naive local time, as Lance's version timestamps

    def nothing_prunable(self, settings: MaintenanceSettings, now: datetime) -> bool:
        """Whether no version can be old enough to prune: the prune window's cut-off is
        never later than ``prune_older_than_days`` ago (keeping the newest versions and
        tagged ones only moves it earlier), and a manifest is written after its
        version's timestamp, so an oldest manifest younger than that (with a minute's
        margin) settles it without the version list."""
        return self.oldest_written - _LISTING_MARGIN >= now - timedelta(days=settings.prune_older_than_days)


# How much earlier than its manifest file's write time a version's timestamp may be.
_LISTING_MARGIN = timedelta(minutes=1)


def list_manifests(table: Any) -> ManifestListing | None:
    """The version manifests of a table in a local database, from one listing of its
    ``_versions`` folder; None for an object store or a folder that cannot be listed
    (the caller then reads the version list). At 1,600 versions of a 450k-row table
    this is milliseconds against the version list's 1.2 s: every manifest holds every
    fragment of its version."""
    uri = str(getattr(table, "uri", "") or "")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if not uri or "://" in uri:
        return None
    oldest, n = None, 0
    try:
        with os.scandir(os.path.join(uri, "_versions")) as it:
            for e in it:
                if e.name.endswith(".manifest"):
                    n += 1
                    m = e.stat().st_mtime
                    oldest = m if oldest is None else min(oldest, m)
    except OSError:
        return None
    if oldest is None:
        return None
    return ManifestListing(n, datetime.fromtimestamp(oldest))


def _prunable(versions: list[dict], older_than: timedelta, now: datetime | None = None) -> bool:
    """Whether the oldest version falls outside the prune window (else pruning has
    nothing to remove, and is not run)."""
    return older_than < _NEVER and versions[0]["timestamp"] < (now or datetime.now()) - older_than


def _versions_if_prunable(table: Any, settings: MaintenanceSettings, now: datetime) -> list[dict] | int:
    """The version list when pruning may have work (or cannot be ruled out), else
    only how many versions there are, from a listing of the manifests."""
    listing = list_manifests(table)
    if listing is not None and (not settings.prune or listing.nothing_prunable(settings, now)):
        return listing.count
    return table.list_versions()


def drop_old_eval_tags(table: Any, days: float, now: datetime | None = None) -> list[str]:
    """Delete the ``eval-`` tags on versions older than ``days``; returns their names."""
    now = now or datetime.now()
    tags = {name: t for name, t in table.tags.list().items() if name.startswith("eval-")}
    if not tags:
        return []  # the version list (a manifest read per version) is not needed
    when = {v["version"]: v["timestamp"] for v in table.list_versions()}
    old = [name for name, t in tags.items()
           if name.startswith("eval-") and t["version"] in when and now - when[t["version"]] > timedelta(days=days)]
    for name in sorted(old):
        table.tags.delete(name)
    return sorted(old)


def _cleanup(table: Any, older_than: timedelta) -> None:
    with warnings.catch_warnings():
        # A zero window warns about concurrent readers; the window here is never zero.
        warnings.simplefilter("ignore", UserWarning)
        table.cleanup_old_versions(older_than)


def compactable_fragments(table: Any, target_rows: int) -> int:
    """How many fragments compaction would rewrite, planned as Lance plans it: runs of
    neighbouring candidates (fragments under ``target_rows`` rows, or with more than
    :data:`MATERIALIZE_DELETIONS` of their rows deleted) that the same index segments
    cover; a run is rewritten when it holds two fragments or more, or one with
    deletions to materialise. Lance does not merge fragments different index deltas
    cover, so the small fragments of runs indexed as deltas of their own stay until
    the deltas are merged: counting them as work made every unchanged re-run a whole
    maintenance pass (7 s at 450k rows and 1,600 versions). Read from the manifest: no
    data or index file is opened."""
    ds = table.to_lance()
    frags = sorted(ds.get_fragments(), key=lambda f: f.fragment_id)
    if not frags:
        return 0
    covering: dict[int, set[str]] = {f.fragment_id: set() for f in frags}
    for ix in ds.describe_indices():
        for seg in ix.segments:
            for fid in seg.fragment_ids:
                if fid in covering:
                    covering[fid].add(seg.uuid)
    total = 0
    run: list[bool] = []  # the current run's fragments: whether each has deletions to materialise
    key: frozenset[str] | None = None

    def close() -> int:
        return len(run) if len(run) > 1 or any(run) else 0

    for f in frags:
        rows = f.metadata.physical_rows
        deleted = f.metadata.deletion_file.num_deleted_rows if f.metadata.deletion_file is not None else 0
        heavy = bool(rows) and deleted / rows > MATERIALIZE_DELETIONS
        if not heavy and rows >= target_rows:
            total += close()
            run, key = [], None
            continue
        segs = frozenset(covering[f.fragment_id])
        if run and segs != key:
            total += close()
            run = []
        run.append(heavy)
        key = segs
    return total + close()


def compact(table: Any, target_rows: int) -> Any:
    """Merge the fragments smaller than ``target_rows`` into fragments of up to that
    size; bigger fragments are left as they are (LanceDB's ``optimize()`` merges
    everything under a million rows, so a run that added ten rows rewrote a table of
    400k: 6 s). Returns Lance's compaction metrics."""
    return table.compact_files(target_rows_per_fragment=target_rows, materialize_deletions_threshold=MATERIALIZE_DELETIONS)


def index_deltas(table: Any) -> dict[str, tuple[int, int]]:
    """Index name -> (deltas, unindexed rows) for every index of the table."""
    out = {}
    for ix in table.list_indices():
        st = table.index_stats(ix.name)
        if st is not None:
            out[ix.name] = (int(getattr(st, "num_indices", 1) or 1), int(getattr(st, "num_unindexed_rows", 0) or 0))
    return out


def fold_into_indexes(table: Any, max_deltas: int) -> list[str]:
    """Add the rows no index covers yet to every index, as one new delta each (work in
    proportion to those rows); an index past ``max_deltas`` deltas has them merged into
    one. Returns what was done, in words."""
    actions = []
    deltas = index_deltas(table)
    pending = {name: n for name, (_, n) in deltas.items() if n}
    if pending:
        table.to_lance().optimize.optimize_indices(num_indices_to_merge=0)
        table.checkout_latest()
        actions.append(f"indexed {max(pending.values())} new rows as a delta of {', '.join(sorted(pending))}")
    for name, (count, _) in index_deltas(table).items():
        if count > max_deltas:
            table.to_lance().optimize.optimize_indices(num_indices_to_merge=count, index_names=[name])
            table.checkout_latest()
            actions.append(f"merged the {count} deltas of index {name}")
    return actions


def ensure_scalar_indexes(table: Any) -> list[str]:
    """Build the missing BTREE indexes on ``doc_id`` and ``content_hash`` (once per
    table; later rows are folded in as deltas); returns the names built."""
    have = {getattr(ix, "name", None) for ix in table.list_indices()}
    built = []
    for column, name in SCALAR_INDEXES.items():
        if name not in have:
            table.create_scalar_index(column, index_type="BTREE", name=name)
            built.append(name)
    return built


def ensure_fts_index(table: Any) -> bool:
    """Build the native BM25 index on ``text`` (English stemming and stop words) when
    the table has none; rows added later go in as deltas (:func:`fold_into_indexes`),
    and a search covers the rows outside it too. True when it built one."""
    if FTS_INDEX in {getattr(ix, "name", None) for ix in table.list_indices()}:
        return False
    import_lancedb()
    from lancedb.index import FTS

    table.create_index(
        "text", config=FTS(stem=True, remove_stop_words=True, ascii_folding=True, lower_case=True), replace=True, name=FTS_INDEX
    )
    return True


def training_samples(rows: int, partitions: int) -> tuple[int, int] | None:
    """Rows sampled to train IVF's k-means and PQ's codebook over a table of ``rows``
    rows, or None when the samples would be (nearly) the whole table: then LanceDB
    trains on every row, which at that size costs little."""
    ivf, pq = IVF_SAMPLE_PER_PARTITION * partitions, PQ_SAMPLE_PER_CENTROID * PQ_MIN_ROWS
    return (ivf, pq) if rows >= 2 * pq else None


def build_vector_index(table: Any, rows: int) -> str:
    """Train an IVF_PQ (cosine) index on ``vector`` over the table's ``rows`` rows,
    replacing any older one; returns its name.

    On a big table the model is trained on samples (:func:`training_samples`) through
    pylance's ``IndicesBuilder``, then handed to the build, which only assigns and
    encodes: LanceDB's ``create_index`` trains on 256 rows per partition and per PQ
    centroid, which held +660 MiB at 200k rows; this way 2 million 384-d vectors peak
    at about 1.3 GiB (docs/benchmark.md, "Index builds")."""
    import_lancedb()
    dim = table.schema.field("vector").type.list_size
    partitions, sub_vectors = index_params(rows, dim)
    old = vector_index(table)
    name = f"{VECTOR_INDEX_PREFIX}_{rows}"
    samples = training_samples(rows, partitions)
    if samples is None:
        from lancedb.index import IvfPq

        table.create_index(
            "vector", config=IvfPq(distance_type="cosine", num_partitions=partitions, num_sub_vectors=sub_vectors),
            replace=True, name=name,
        )
    else:
        import_lance()
        from lance.indices import IndicesBuilder

        ds = table.to_lance()
        builder = IndicesBuilder(ds, "vector")
        ivf = builder.train_ivf(partitions, distance_type="cosine", sample_rate=IVF_SAMPLE_PER_PARTITION)
        pq = builder.train_pq(ivf, sub_vectors, sample_rate=PQ_SAMPLE_PER_CENTROID)
        ds.create_index("vector", "IVF_PQ", name=name, metric="cosine", num_partitions=partitions,
                        num_sub_vectors=sub_vectors, ivf_centroids=ivf.centroids, pq_codebook=pq.codebook, replace=True)
        table.checkout_latest()
        log.info("vector index %s: IVF trained on %d sampled rows, PQ on %d, of %d", name, *samples, rows)
    if old is not None and old.name != name and any(ix.name == old.name for ix in table.list_indices()):
        table.drop_index(old.name)
    return name


def vector_index_due(settings: MaintenanceSettings, fig: TableFigures) -> str | None:
    """Why the vector index must be (re)trained at the next pass, or None. Training
    reads every vector, so its memory grows with the table."""
    if not settings.vector_index or fig.rows < settings.min_rows_for_index:
        return None
    if fig.vector_index is None:
        return "no vector index"
    trained = trained_rows(fig.vector_index)
    if trained is None or fig.rows >= settings.retrain_growth * trained:
        return f"vector index {fig.vector_index} outgrown"
    return None


def pending_work(table: Any, settings: MaintenanceSettings, fig: TableFigures, now: datetime | None = None,
                 versions: list[dict] | None = None) -> list[str]:
    """What the table needs from maintenance (empty: nothing), so a table that needs
    nothing gets no new version and an unchanged re-run does not look like a change."""
    due = []
    if settings.compact:
        n = compactable_fragments(table, settings.compact_target_rows)
        if n:
            due.append(f"{n} fragments to compact")
    for name, (count, unindexed) in index_deltas(table).items():
        if unindexed:
            due.append(f"{unindexed} rows outside index {name}")
        elif count > settings.max_index_deltas:
            due.append(f"index {name} has {count} deltas")
    if settings.prune:
        now = now or datetime.now()
        if versions is None:
            listing = list_manifests(table)
            versions = [] if listing is not None and listing.nothing_prunable(settings, now) else table.list_versions()
        if versions:
            older_than, why = prune_window(table, settings, now, versions)
            if _prunable(versions, older_than, now):
                due.append(f"old versions to prune ({why})")
    why = vector_index_due(settings, fig)
    if why:
        due.append(why)
    if fig.rows:
        names = {getattr(ix, "name", None) for ix in table.list_indices()}
        if settings.fts_index and FTS_INDEX not in names:
            due.append("no full-text index")
        if settings.scalar_indexes and not set(SCALAR_INDEXES.values()) <= names:
            due.append("no scalar index on doc_id or content_hash")
    return due


def maintain(table: Any, settings: MaintenanceSettings | None = None, now: datetime | None = None,
             wrote: bool = False) -> MaintenanceReport:
    """One maintenance pass over ``table`` (a LanceDB table at its latest version), in
    proportion to what changed since the last one: the small fragments runs wrote are
    compacted, new rows go into every index as a delta, old versions are pruned; the
    vector index is trained again only when the table has grown ``retrain_growth``
    times past the rows it was trained on. ``wrote``: the caller changed the table
    since the last pass; otherwise a table that needs nothing (:func:`pending_work`)
    is left as it is, with no new version."""
    settings = settings or MaintenanceSettings()
    t0 = time.perf_counter()
    now_ = now or datetime.now()
    versions = _versions_if_prunable(table, settings, now_)
    before = figures(table, versions)
    report = MaintenanceReport(table=table.name, before=before, after=before)
    if settings.drop_eval_tags_older_than_days is not None:
        dropped = drop_old_eval_tags(table, settings.drop_eval_tags_older_than_days, now)
        if dropped:
            report.actions.append(f"deleted {len(dropped)} evaluation tags older than "
                                  f"{settings.drop_eval_tags_older_than_days:g} days: {', '.join(dropped)}")
    if not wrote and not pending_work(table, settings, before, now, versions if isinstance(versions, list) else []):
        report.actions.append("nothing to compact, index or prune: the table needs nothing")
        report.version_after = table.version
        report.seconds = round(time.perf_counter() - t0, 4)
        return report
    if settings.compact and compactable_fragments(table, settings.compact_target_rows):
        # Before the new rows go into the indexes: fragments under different index
        # deltas are not merged by Lance, so this run's fragments are merged first.
        m = compact(table, settings.compact_target_rows)
        if m.fragments_removed:
            report.actions.append(f"compacted {m.fragments_removed} small fragments into {m.fragments_added}")
    rows = table.count_rows()
    if settings.scalar_indexes and rows:
        built = ensure_scalar_indexes(table)
        if built:
            report.actions.append(f"built scalar indexes {', '.join(built)}")
    # Each step below allocates in proportion to what it reads and frees it all at the
    # end: handing that back in between keeps the peak that of the largest step.
    release_memory()
    if settings.vector_index:
        ix = vector_index(table)
        if rows < settings.min_rows_for_index:
            report.actions.append(f"no vector index: {rows} rows < {settings.min_rows_for_index} (search is exact)")
        elif ix is None:
            report.actions.append(f"built vector index {build_vector_index(table, rows)}")
        else:
            trained = trained_rows(ix.name)
            if trained is None or rows >= settings.retrain_growth * trained:
                report.actions.append(f"retrained vector index {build_vector_index(table, rows)} (was {ix.name})")
    release_memory()
    if settings.fts_index and rows and ensure_fts_index(table):
        report.actions.append(f"built full-text index {FTS_INDEX}")
    report.actions.extend(fold_into_indexes(table, settings.max_index_deltas))
    # The version list is read once before pruning and once after it: each read opens
    # every version's manifest (a second per 1,600 versions), so it is never read twice
    # for the same state.
    versions = None
    if settings.prune:
        versions = _versions_if_prunable(table, settings, now_)
        older_than, why = (prune_window(table, settings, now, versions) if isinstance(versions, list)
                           else (timedelta(days=settings.prune_older_than_days), f"older than {settings.prune_older_than_days:g} days"))
        if not isinstance(versions, list):
            report.actions.append(f"nothing to prune (no version {why})")
        elif older_than >= _NEVER:
            report.actions.append(f"not pruned ({why})")
        elif not _prunable(versions, older_than, now):
            report.actions.append(f"nothing to prune ({why})")
        else:
            n = len(versions)
            try:
                _cleanup(table, older_than)
                versions = table.list_versions()
                report.actions.append(f"pruned {n - len(versions)} versions ({why})")
            except RuntimeError as exc:
                if "tagged version" not in str(exc):
                    raise
                # A tag created since we looked: prune nothing this time.
                report.actions.append(f"not pruned: {exc}")
    else:
        report.actions.append("not pruned (pruning off)")
    report.after = figures(table, versions)
    report.version_after = table.version
    report.seconds = round(time.perf_counter() - t0, 4)
    return report


def maintain_after_run(table: Any, settings: MaintenanceSettings, record: Any) -> MaintenanceReport | None:
    """Maintenance at the end of a successful run, its figures put on the run's ledger
    record. A maintenance failure is recorded there and logged, never raised: the
    run's data is committed by then."""
    if not settings.enabled:
        return None
    try:
        report = maintain(table, settings, wrote=table.version != record.version_before)
    except Exception as exc:  # noqa: BLE001 - the run succeeded; say what failed
        log.warning("maintenance of %s failed: %r", getattr(table, "name", table), exc)
        record.maintenance = {"error": f"{type(exc).__name__}: {exc}"}
        return None
    record.fragments = report.after.fragments
    record.versions = report.after.versions
    record.unindexed_rows = report.after.unindexed_rows
    record.maintenance = report.as_dict()
    record.counts.add_time("maintain", report.seconds)
    return report


def maintain_table(db_uri: str, table_name: str, settings: MaintenanceSettings | None = None) -> MaintenanceReport:
    """Maintain one table of a database by hand, and record it in the ledger as a
    ``maintain`` run."""
    from .chunks import connect, open_table_if_exists
    from .ledger import Ledger, RunRecord, utcnow

    settings = settings or MaintenanceSettings()
    table = open_table_if_exists(connect(db_uri), table_name)
    if table is None:
        raise ValueError(f"no table {table_name!r} in {db_uri!r}")
    rec = RunRecord(
        run_id=f"maintain-{utcnow():%Y%m%dT%H%M%S}-{table.version}", flow="maintain", source="", table_name=table_name,
        model_id="", parameters=settings.model_dump(), version_before=table.version,
    )
    report = maintain(table, settings)
    rec.fragments, rec.versions, rec.unindexed_rows = report.after.fragments, report.after.versions, report.after.unindexed_rows
    rec.maintenance = report.as_dict()
    rec.counts.add_time("maintain", report.seconds)
    rec.status, rec.finished, rec.version_after = "completed", utcnow(), report.version_after
    Ledger(db_uri).write(rec)
    return report
