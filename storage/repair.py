"""``grainline check --repair``: make a damaged database whole again where its data
allows.

An index is derived data: each damaged one (``storage/index_check.py``) is dropped and
built again from the table's rows, with the function maintenance builds it with, under
the table's write lock, as a ``repair`` run of the ledger (its parameters name the
indexes it rebuilds). A repair killed between the drop and the build leaves that run
unfinished in the ledger with the index missing: ``check`` reports it
(:func:`unfinished_repairs`) and the next repair builds it.

A data file is not derivable: a damaged one is reported with the documents it held (read
from the file when it still reads, else from the ``doc_id`` index) and the last table
version that does not use it, where those documents were whole (``grainline restore``
makes it current; the next ``ingest`` of their source then writes what changed since).

A database with nothing damaged is not touched: no run, no version."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .check import CheckReport, Problem, check_database, first_line
from .index_check import REPAIR_FLOW, IndexDamage, table_dir, unfinished_repairs  # noqa: F401


# A damaged data file no version names is set aside only once it is this old (seconds).
ORPHAN_AGE_S = 300


@dataclass
class Rebuilt:
    """One index made whole: which, and what it is now."""

    table: str
    index: str
    kind: str
    now: str | None  # the rebuilt index's name; None when it is left out (too few rows)
    run_id: str
    note: str = ""

    def line(self) -> str:
        what = (f"rebuilt as {self.now}" if self.now == self.index else
                f"rebuilt as {self.now} (was {self.index})" if self.now else f"dropped, not rebuilt: {self.note}")
        return f"repaired: table {self.table}: index {self.index} ({self.kind}) {what} (run {self.run_id})"


@dataclass
class DataDamage:
    """A damaged data file: the documents it held and where they were last whole."""

    table: str
    file: str
    docs: list[str] | None  # None: they could not be read from anywhere
    whole_version: int | None

    def line(self, db: str) -> str:
        docs = ("its documents cannot be read" if self.docs is None else
                f"it held {len(self.docs)} documents ({', '.join(self.docs[:5])}{', ...' if len(self.docs) > 5 else ''})")
        if self.whole_version is None:
            where = "no version kept is without it"
        else:
            where = (f"version {self.whole_version} is the newest without it: grainline restore {self.whole_version} "
                     f"--db {db} --table {self.table}, then ingest their source again to write them anew")
        return f"not repairable: table {self.table}: data file {Path(self.file).name}: {docs}; {where}"


@dataclass
class RepairReport:
    """What a repair found and did."""

    before: CheckReport
    rebuilt: list[Rebuilt] = field(default_factory=list)
    data: list[DataDamage] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)  # one line per damaged manifest set aside
    after: CheckReport | None = None

    @property
    def changed(self) -> bool:
        return bool(self.rebuilt or self.set_aside)


def repair_database(db_uri: str, only: str | None = None, lock_timeout_s: float = 600,
                    before: CheckReport | None = None) -> RepairReport:
    """Check the database (or table ``only``; ``before``: a check just made), rebuild
    every damaged index, and report the damaged data files; then check again. Raises
    only what ``check_database`` does."""
    report = RepairReport(before=before if before is not None else check_database(db_uri, only))
    for name in sorted({p.table for p in report.before.problems if p.kind == "manifest"}):
        try:
            report.set_aside += _set_aside_manifests(db_uri, name, lock_timeout_s)
        except Exception as exc:  # noqa: BLE001 - said, and the next check still reports it
            report.failed.append(f"table {name}: setting its damaged manifests aside failed: {first_line(exc)}")
    for name in sorted({p.table for p in report.before.problems if p.kind == "history"}):
        files = [p.where for p in report.before.problems if p.kind == "history" and p.table == name]
        try:
            report.set_aside += _set_aside_versions(db_uri, name, files, lock_timeout_s)
        except Exception as exc:  # noqa: BLE001 - said, and the next check still reports it
            report.failed.append(f"table {name}: setting aside the versions of a damaged data file failed: {first_line(exc)}")
    # With a manifest set aside the table opens again: its current version is checked afresh.
    now = check_database(db_uri, only) if report.set_aside else report.before
    by_table: dict[str, list[IndexDamage]] = {}
    for d in now.indexes_damaged:
        by_table.setdefault(d.table, []).append(d)
    for name, damaged in sorted(by_table.items()):
        try:
            report.rebuilt += _repair_table(db_uri, name, damaged, lock_timeout_s)
        except Exception as exc:  # noqa: BLE001 - said, and the next check still reports it
            report.failed.append(f"table {name}: the repair failed: {first_line(exc)}")
    for p in now.problems:
        if p.kind == "open" and p.where not in ("table", "data", "manifest"):
            report.data.append(data_damage(db_uri, p.table, p.where))
    report.after = check_database(db_uri, only) if report.changed else report.before
    return report


def _set_aside_manifests(db_uri: str, name: str, lock_timeout_s: float) -> list[str]:
    """Move each damaged manifest of ``name`` out of ``_versions/`` into ``_damaged/``
    (kept, out of Lance's sight), under the table's write lock, as a ``repair`` run
    whose parameters name the versions lost. When the newest was damaged, the newest
    whole version is current again; the rows only the lost version held come back with
    the next ``ingest`` of their source."""
    import os

    from .index_check import DAMAGED_DIR, damaged_manifests, manifest_version
    from .ledger import Ledger, RunRecord, new_run_id, utcnow
    from .locks import TableLock

    root = table_dir(db_uri, name)
    bad = damaged_manifests(db_uri, name)
    if root is None or not bad:
        return []
    rec = RunRecord(run_id=new_run_id(REPAIR_FLOW), flow=REPAIR_FLOW, source="", table_name=name, model_id="",
                    parameters={"manifests": [f.name for f, _, _ in bad], "lost_versions": [v for _, v, _ in bad]})
    lines = []
    with TableLock(db_uri, name, lock_timeout_s, run_id=rec.run_id):
        ledger = Ledger(db_uri)
        ledger.write(rec)
        ledger.mark_interrupted(name, rec.run_id)
        dest = root / DAMAGED_DIR
        dest.mkdir(exist_ok=True)
        for f, v, why in bad:
            os.replace(f, dest / f.name)
            lines.append(f"repaired: table {name}: manifest of version {v} ({why}) set aside in {dest / f.name} "
                         f"(run {rec.run_id}); version {v} is lost")
        whole = sorted(v for f in (root / "_versions").glob("*.manifest") if (v := manifest_version(f)) is not None)
        if whole:
            lines += _redo_export(db_uri, name)
        rec.status, rec.finished = "completed", utcnow()
        rec.version_after = whole[-1] if whole else None
        ledger.write(rec)
    if whole:
        lines.append(f"table {name} is at version {whole[-1]}: ingest its sources again to write what the lost versions held")
    return lines


def _redo_export(db_uri: str, name: str) -> list[str]:
    """The Parquet export, when there is one, brought to the version now current (it
    may name a version just set aside); as ``grainline restore`` does. Under the lock."""
    from .chunks import connect
    from .parquet import default_export_dir, export_table, exported_version

    export = default_export_dir(db_uri, name)
    if exported_version(export) is None:
        return []
    table = connect(db_uri).open_table(name)
    export_table(table, export)
    return [f"table {name}: Parquet export {export} redone (version {table.version})"]


def _set_aside_versions(db_uri: str, name: str, files: list[str], lock_timeout_s: float) -> list[str]:
    """A damaged data file the current version does not use (``history`` problems):
    move it, and the manifests of the older versions that name it (they cannot be read),
    into ``_damaged/``, under the table's write lock, as a ``repair`` run whose
    parameters name the versions lost; a tag on such a version is deleted with it. A
    file the current version names again (a writer came first) is left for ``check``."""
    import os

    from .index_check import DAMAGED_DIR, manifest_version, versions_using
    from .lance_import import import_lance
    from .ledger import Ledger, RunRecord, new_run_id, utcnow
    from .locks import TableLock

    root = table_dir(db_uri, name)
    if root is None or not files:
        return []
    rec = RunRecord(run_id=new_run_id(REPAIR_FLOW), flow=REPAIR_FLOW, source="", table_name=name, model_id="",
                    parameters={"data_files": [Path(f).name for f in files]})
    lines: list[str] = []
    with TableLock(db_uri, name, lock_timeout_s, run_id=rec.run_id):
        ds = import_lance().dataset(str(root))
        current = {df.path for f in ds.get_fragments() for df in f.metadata.files}
        todo = [Path(f) for f in files if Path(f).name not in current and Path(f).exists()]
        using = {f: versions_using(db_uri, name, str(f)) for f in todo}
        # A file no version names may be a write in flight that takes no table lock (the
        # ledger's own rows): left alone while it is young.
        todo = [f for f in todo if using[f] or time.time() - f.stat().st_mtime > ORPHAN_AGE_S]
        if not todo:
            return []
        lost = sorted({v for f in todo for v in using[f]})
        rec.parameters["lost_versions"] = lost
        ledger = Ledger(db_uri)
        ledger.write(rec)
        ledger.mark_interrupted(name, rec.run_id)
        dest = root / DAMAGED_DIR
        (dest / "data").mkdir(parents=True, exist_ok=True)
        for tag, t in list(ds.tags.list().items()):
            if t.get("version") in lost:
                ds.tags.delete(tag)
                lines.append(f"repaired: table {name}: tag {tag} named version {t['version']}, which is lost: deleted")
        for m in sorted((root / "_versions").glob("*.manifest")):
            if manifest_version(m) in lost:
                os.replace(m, dest / m.name)
        for f in todo:
            os.replace(f, dest / "data" / f.name)
            lines.append(f"repaired: table {name}: damaged data file {f.name} set aside in {dest / 'data' / f.name} "
                         f"with the manifests of the versions that used it ({', '.join(map(str, lost)) or 'none'}; "
                         f"run {rec.run_id}); those versions are lost, the current version {ds.version} is whole")
        rec.status, rec.finished, rec.version_after = "completed", utcnow(), ds.version
        ledger.write(rec)
    return lines


def _repair_table(db_uri: str, name: str, damaged: list[IndexDamage], lock_timeout_s: float) -> list[Rebuilt]:
    from .chunks import connect
    from .ledger import Ledger, RunRecord, new_run_id, recorded_run

    fixable = [d for d in damaged if d.index != "(all)"]
    if not fixable:
        raise RuntimeError(f"the manifest's index list does not read ({damaged[0].reason}): "
                           f"restore an older version (grainline runs --db {db_uri} lists them)")
    rec = RunRecord(run_id=new_run_id(REPAIR_FLOW), flow=REPAIR_FLOW, source="", table_name=name, model_id="",
                    parameters={"indexes": [{"index": d.index, "kind": d.kind, "column": d.column, "file": d.file,
                                             "reason": d.reason} for d in fixable]})
    out = []
    with recorded_run(db_uri, rec, lambda: connect(db_uri).open_table(name), lambda t: t.version, lock_timeout_s) as table:
        # Under the lock no other run of the table is alive: a 'running' one died.
        Ledger(db_uri).mark_interrupted(name, rec.run_id)
        for d in fixable:
            out.append(_rebuild(table, d, rec.run_id))
    return out


def _rebuild(table: Any, d: IndexDamage, run_id: str) -> Rebuilt:
    """Drop the damaged index and build it again from the rows, with the function
    maintenance builds it with (a name grainline does not build: the same kind on the
    same column)."""
    from .maintenance import (FTS_INDEX, PQ_MIN_ROWS, SCALAR_INDEXES, build_vector_index, ensure_fts_index,
                              ensure_scalar_indexes)

    if d.index in {getattr(ix, "name", None) for ix in table.list_indices()}:
        table.drop_index(d.index)
    table.checkout_latest()
    if d.kind == "vector":
        rows = table.count_rows()
        if rows < PQ_MIN_ROWS:
            return Rebuilt(table.name, d.index, d.kind, None, run_id, f"{rows} rows < {PQ_MIN_ROWS} (search is exact)")
        return Rebuilt(table.name, d.index, d.kind, build_vector_index(table, rows), run_id)
    if d.kind == "full-text":
        if d.index == FTS_INDEX:
            ensure_fts_index(table)
        else:
            table.create_fts_index(d.column, replace=True)
        return Rebuilt(table.name, d.index, d.kind, d.index, run_id)
    if d.index in SCALAR_INDEXES.values():
        ensure_scalar_indexes(table)
    else:
        table.create_scalar_index(d.column, index_type="BTREE", name=d.index)
    return Rebuilt(table.name, d.index, d.kind, d.index, run_id)


def data_damage(db_uri: str, name: str, file: str) -> DataDamage:
    """The documents a damaged data file held and the last version without that file."""
    from .lance_import import import_lance

    lance = import_lance()
    root = table_dir(db_uri, name)
    fname = Path(file).name
    try:
        ds = lance.dataset(str(root))
    except Exception:  # noqa: BLE001 - the manifest itself does not read
        return DataDamage(name, file, None, None)
    frag_id = next((f.fragment_id for f in ds.get_fragments() if any(df.path == fname for df in f.metadata.files)), None)
    return DataDamage(name, file, _docs_of(ds, root, frag_id), _last_version_without(lance, root, ds, fname))


def _docs_of(ds: Any, root: Path | None, frag_id: int | None) -> list[str] | None:
    if frag_id is None:
        return None
    try:
        col = ds.get_fragment(frag_id).to_table(columns=["doc_id"]).column("doc_id")
        return sorted(set(col.to_pylist()))
    except Exception:  # noqa: BLE001 - the file does not read: ask the doc_id index
        pass
    from .maintenance import SCALAR_INDEXES

    try:
        desc = next(d for d in ds.describe_indices() if d.name == SCALAR_INDEXES["doc_id"])
        from lance.file import LanceFileReader

        docs: set[str] = set()
        for seg in desc.segments:
            if frag_id not in set(seg.fragment_ids):
                continue
            t = LanceFileReader(str(root / "_indices" / seg.uuid / "page_data.lance")).read_all().to_table()
            for value, rid in zip(t.column("values").to_pylist(), t.column("ids").to_pylist()):
                if rid >> 32 == frag_id:
                    docs.add(value)
        return sorted(docs) or None
    except Exception:  # noqa: BLE001 - no index, or it does not read either
        return None


def _last_version_without(lance: Any, root: Path | None, ds: Any, fname: str) -> int | None:
    """The newest version whose manifest does not use the file (its documents whole)."""
    for v in sorted((int(v["version"]) for v in ds.versions()), reverse=True):
        try:
            old = lance.dataset(str(root), version=v)
            if not any(df.path == fname for f in old.get_fragments() for df in f.metadata.files):
                return v
        except Exception:  # noqa: BLE001 - a version whose manifest does not read is no answer
            continue
    return None


def problem_lines(report: RepairReport, db: str) -> list[str]:
    """What the repair did and what it could not do, one line each."""
    lines = report.set_aside + [r.line() for r in report.rebuilt] + [d.line(db) for d in report.data] + report.failed
    return lines


__all__ = ["RepairReport", "Rebuilt", "DataDamage", "repair_database", "unfinished_repairs", "problem_lines", "Problem"]
