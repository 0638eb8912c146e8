"""``grainline check``: verify a database the way fsck verifies a disk, and report each
problem found as one :class:`Problem` (kind, table, where, reason).

What is checked, table by table:

- ``open``: the table opens and every row can be read (a truncated or missing data
  file fails the read; locally, a data file without Lance's footer is named);
- ``version``: every version the ledger (``runs``) names for the table exists. A
  version older than the oldest one kept was pruned by maintenance, which is no
  damage; a missing version newer than that is;
- ``row``: each chunk row agrees with itself and its document: ``end > start``, the
  text is ``end - start`` characters, ``content_hash`` and ``chunk_id`` are what the
  text, offsets and parameters give, the vector has the table's dimension and is
  finite, the rows of one document and chunker share one ``doc_hash``, and a sentence
  or paragraph is the slice of its document's article at its offsets;
- ``duplicate``: no chunk id occurs twice;
- ``export``: the Parquet export holds exactly the rows of the version it names;
- ``lock``: a table's write lock is not held by a dead process, and no run died
  holding it while the ledger still says it is running (an object-store lease: not
  lapsed while a run is recorded as running);
- ``history``: a damaged data file that only older versions name (a ``restore`` past
  it left it behind): the current version is whole, those versions cannot be read;
  ``grainline check --repair`` sets them aside;
- ``index``: every index (vector, full-text, scalar) reads and answers a query through
  it correctly, and every file the manifest names is there and whole
  (``storage/index_check.py``); an index a killed repair left dropped is named too.
  ``grainline check --repair`` rebuilds them (``storage/repair.py``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from grainline.documents import sha256_hex
from grainline.errors import TerminalError

from .chunks import connect, open_table_if_exists
from .ledger import RUNS_TABLE
from .lock_protocol import LOCK_DIR, is_local
from .parquet import MARKER, default_export_dir, exported_version, read_export
from .problem import LANCE_FOOTER, Problem, first_line  # noqa: F401  (re-exported)
from .tables import table_names

# Article texts kept for the slice check of sentences and paragraphs; beyond this the
# remaining documents are checked without it (their hashes and offsets still are).
ARTICLE_BUDGET_CHARS = 256 << 20
ROW_COLUMNS = ["chunk_id", "doc_id", "strategy", "chunker_key", "params", "start", "end", "text", "handling",
               "content_hash", "doc_hash", "vector"]


class NotADatabase(TerminalError, ValueError):
    """The path names no grainline database (missing, a file, or no table in it)."""


# Kinds that mean the table itself is damaged; a stale export or a dead lock holder is
# reported too, but is about files beside the table, which the next run rewrites.
TABLE_DAMAGE = frozenset({"open", "manifest", "version", "row", "duplicate"})


@dataclass
class CheckReport:
    """What a check looked at, and the problems it found."""

    db: str
    tables: list[str] = field(default_factory=list)
    rows: int = 0
    versions: int = 0
    exports: int = 0
    locks: int = 0
    indexes: int = 0
    problems: list[Problem] = field(default_factory=list)
    # The damaged indexes (each also one problem of kind ``index``), for the repair.
    indexes_damaged: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damage(self) -> list[Problem]:
        """The problems that mean a table itself is damaged (:data:`TABLE_DAMAGE`)."""
        return [p for p in self.problems if p.kind in TABLE_DAMAGE]

    def summary(self) -> str:
        """One line: what was checked."""
        return (f"ok: {len(self.tables)} tables, {self.rows} chunk rows, {self.indexes} indexes, "
                f"{self.versions} ledger versions, {self.exports} exports, {self.locks} locks checked in {self.db}")


_first_line = first_line


def open_database(db_uri: str) -> Any:
    """Connect to ``db_uri``, raising :class:`NotADatabase` unless it holds a table."""
    if is_local(db_uri):
        path = Path(db_uri.removeprefix("file://"))
        if not path.is_dir():
            raise NotADatabase(f"{db_uri!r} is no database: {'a file' if path.exists() else 'nothing is there'}")
        if not any(p.suffix == ".lance" and p.is_dir() for p in path.iterdir()):
            raise NotADatabase(f"{db_uri!r} is no database: it holds no LanceDB table")
    try:
        conn = connect(db_uri)
        names = table_names(conn)
    except (OSError, ValueError, RuntimeError) as exc:
        raise NotADatabase(f"{db_uri!r} is no database: {_first_line(exc)}") from None
    if not names:
        raise NotADatabase(f"{db_uri!r} is no database: it holds no LanceDB table")
    return conn


def check_database(db_uri: str, only: str | None = None) -> CheckReport:
    """Check every table of a database (or only table ``only``); never raises for
    damage, only :class:`NotADatabase` for a path that is no database."""
    conn = open_database(db_uri)
    report = CheckReport(db=db_uri)
    names = sorted(table_names(conn))
    if only is not None and only not in names:
        raise NotADatabase(f"no table {only!r} in {db_uri!r}; tables: {', '.join(names)}")
    runs = _ledger_rows(conn, report)
    for name in names if only is None else [only]:
        report.tables.append(name)
        table = _open(conn, db_uri, name, report)
        if table is None:
            continue
        _check_versions(table, name, runs, report)
        _check_indexes(db_uri, name, table, runs, report)
        if name != RUNS_TABLE and "vector" in table.schema.names:
            _check_rows(table, name, report)
            _check_export(conn, db_uri, name, report)
    _check_locks(db_uri, names if only is None else [only], runs, report)
    return report


def _check_indexes(db_uri: str, name: str, table: Any, runs: list[dict[str, Any]], report: CheckReport) -> None:
    """Every index read and used once (``storage/index_check.py``), and the indexes a
    repair killed mid-way left dropped (``storage/repair.py``)."""
    from .index_check import check_indexes, unfinished_repairs

    for damage in check_indexes(db_uri, name, table) + unfinished_repairs(runs, name, table):
        report.indexes_damaged.append(damage)
        report.problems.append(damage.problem())
    try:
        report.indexes += len(table.list_indices())
    except Exception:  # noqa: BLE001 - reported by check_indexes
        pass


def _ledger_rows(conn: Any, report: CheckReport) -> list[dict[str, Any]]:
    t = open_table_if_exists(conn, RUNS_TABLE)
    if t is None:
        return []
    try:
        cols = [c for c in ("run_id", "flow", "status", "table_name", "version_before", "version_after", "parameters")
                if c in t.schema.names]
        return t.search().select(cols).limit(None).to_arrow().to_pylist()
    except (OSError, RuntimeError, ValueError):
        return []  # reported by the table's own read check


def _open(conn: Any, db_uri: str, name: str, report: CheckReport) -> Any | None:
    """The table, once it opened and every column of every row was read; else None
    with the problems (the truncated files named where the database is local)."""
    from .index_check import check_manifests

    manifests = check_manifests(db_uri, name)
    report.problems += manifests
    if manifests:
        return None  # what a damaged manifest names cannot be trusted: the repair first
    try:
        table = conn.open_table(name)
    except Exception as exc:  # noqa: BLE001 - whatever LanceDB raises, the table does not open
        report.problems.append(Problem("open", name, "table", f"does not open: {_first_line(exc)}"))
        return None
    cut = []
    try:
        current: set[str] | None = {df.path for f in table.to_lance().get_fragments() for df in f.metadata.files}
    except Exception:  # noqa: BLE001 - reported below, where the fragments are listed again
        current = None
    for f in _truncated_files(db_uri, name):
        if current is not None and Path(f).name not in current:
            # Left behind by a restore (or never committed): the current version is
            # whole; only the older versions naming it are lost.
            from .index_check import history_problem

            report.problems.append(history_problem(db_uri, name, f))
            continue
        cut.append(f)
        report.problems.append(Problem("open", name, f, "data file truncated (no Lance footer)"))
    try:
        from .index_check import check_data_files

        for p in check_data_files(db_uri, name, table.to_lance()):
            if p.where not in cut:
                cut.append(p.where)
                report.problems.append(p)
    except Exception as exc:  # noqa: BLE001 - the manifest's fragment list does not read
        report.problems.append(Problem("open", name, "manifest", f"fragments cannot be listed: {_first_line(exc)}"))
    try:
        for _ in table.search().limit(None).to_batches(8192):
            pass
    except Exception as exc:  # noqa: BLE001 - any read error is damage
        if not cut:
            report.problems.append(Problem("open", name, "data", f"rows cannot be read: {_first_line(exc)}"))
        return None
    return table


def _truncated_files(db_uri: str, name: str) -> Iterator[str]:
    if not is_local(db_uri):
        return
    data = Path(db_uri.removeprefix("file://")) / f"{name}.lance" / "data"
    for f in sorted(data.glob("*.lance")) if data.is_dir() else []:
        try:
            with open(f, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - len(LANCE_FOOTER)))
                tail = fh.read()
        except OSError:
            continue
        if tail != LANCE_FOOTER:
            yield str(f)


def _check_versions(table: Any, name: str, runs: list[dict[str, Any]], report: CheckReport) -> None:
    try:
        kept = {v["version"] for v in table.list_versions()}
    except Exception as exc:  # noqa: BLE001
        report.problems.append(Problem("version", name, "versions", f"cannot be listed: {_first_line(exc)}"))
        return
    oldest = min(kept) if kept else 0
    named: dict[int, str] = {}
    for r in runs:
        if r.get("table_name") != name:
            continue
        for col in ("version_before", "version_after"):
            v = r.get(col)
            if v is not None:
                named.setdefault(int(v), f"run {r['run_id']} ({col})")
    report.versions += len(named)
    # Versions whose damaged manifest a repair set aside: lost, and said so then.
    lost = {int(v) for r in runs if r.get("flow") == "repair" and r.get("table_name") == name and r.get("status") == "completed"
            for v in _params(r).get("lost_versions", [])}
    for v, who in sorted(named.items()):
        if v in lost:
            continue
        # Older than every version kept: pruned by maintenance, as designed.
        if v not in kept and v > oldest:
            report.problems.append(Problem("version", name, f"version {v}",
                                           f"named by {who} but missing (versions kept: {oldest}..{max(kept)})"))


def _params(run: dict[str, Any]) -> dict[str, Any]:
    p = run.get("parameters")
    try:
        return json.loads(p) if isinstance(p, str) else (p or {})
    except ValueError:
        return {}


def chunk_mode(handling: str | None) -> str:
    """The embedding mode a chunk's content hash covers (as ``Chunk.content_hash``)."""
    return handling if handling in ("pool", "truncate") else "plain"


def _check_rows(table: Any, name: str, report: CheckReport) -> None:
    """Every row against itself, its document's other rows and the table's dimension."""
    dim = getattr(table.schema.field("vector").type, "list_size", None)
    cols = [c for c in ROW_COLUMNS if c in table.schema.names]
    seen: set[str] = set()
    doc_hash: dict[tuple[str, str], str] = {}
    articles: dict[tuple[str, str], tuple[int, str]] = {}  # (doc_id, doc_hash) -> (start, text)
    spans: list[tuple[str, str, str, int, int, str]] = []  # checked against the articles afterwards
    budget = ARTICLE_BUDGET_CHARS
    add = report.problems.append
    for batch in table.search().select(cols).limit(None).to_batches(8192):
        d = batch.to_pydict()
        for i, cid in enumerate(d["chunk_id"]):
            report.rows += 1
            doc, start, end, text = d["doc_id"][i], d["start"][i], d["end"][i], d["text"][i] or ""
            where = f"chunk {cid} (doc {doc})"
            if cid in seen:
                add(Problem("duplicate", name, where, "chunk id occurs more than once"))
            seen.add(cid)
            if start is None or end is None or start < 0 or end <= start:
                add(Problem("row", name, where, f"offsets [{start}:{end}] are not a span (end > start >= 0)"))
                continue
            if len(text) != end - start:
                add(Problem("row", name, where, f"text is {len(text)} characters but offsets [{start}:{end}] span {end - start}"))
            if d["content_hash"][i] != sha256_hex(chunk_mode(d["handling"][i]), text):
                add(Problem("row", name, where, "content_hash does not match the text"))
            if cid != sha256_hex(doc, d["strategy"][i], d["params"][i] or "", str(start), str(end)):
                add(Problem("row", name, where, "chunk id does not match its document, strategy, parameters and offsets"))
            vec = d["vector"][i]
            if vec is None or len(vec) != dim:
                add(Problem("row", name, where, f"vector has {None if vec is None else len(vec)} dimensions, the table's model {dim}"))
            elif not all(math.isfinite(x) for x in vec):
                add(Problem("row", name, where, "vector is not finite"))
            key, h = (doc, d["chunker_key"][i]), d["doc_hash"][i]
            if doc_hash.setdefault(key, h) != h:
                add(Problem("row", name, where, f"doc_hash {h} differs from the other {key[1]} rows of its document ({doc_hash[key]})"))
            if d["strategy"][i] == "article":
                if budget >= len(text):
                    budget -= len(text)
                    articles[(doc, h)] = (start, text)
            else:
                spans.append((cid, doc, h, start, end, text))
    # A sentence or paragraph is its document's text at its offsets: the article
    # (the whole document, trimmed) of the same document version shows that text.
    for cid, doc, h, start, end, text in spans:
        art = articles.get((doc, h))
        if art is None:
            continue
        a0, atext = art
        if start < a0 or end > a0 + len(atext) or atext[start - a0:end - a0] != text:
            add(Problem("row", name, f"chunk {cid} (doc {doc})", f"text is not its document's text at [{start}:{end}]"))


def _check_export(conn: Any, db_uri: str, name: str, report: CheckReport) -> None:
    """The export (when there is one) holds the rows of the version its marker names."""
    out = default_export_dir(db_uri, name)
    version = exported_version(out)
    if version is None:
        if is_local(out) and Path(out).is_dir() and any(Path(out).glob("*/*.parquet")):
            report.problems.append(Problem("export", name, out, f"Parquet files but no {MARKER}: an incomplete export"))
        return
    report.exports += 1
    table = conn.open_table(name)  # a table object of its own: checkout moves it
    try:
        table.checkout(version)
    except Exception:  # noqa: BLE001
        report.problems.append(Problem("export", name, out, f"names version {version}, which the table no longer has"))
        return
    want = {r["chunk_id"]: r["content_hash"] for r in
            table.search().select(["chunk_id", "content_hash"]).limit(None).to_arrow().to_pylist()}
    try:
        got_rows = read_export(out, columns=["chunk_id", "content_hash"]).to_pylist()
    except Exception as exc:  # noqa: BLE001 - a damaged Parquet file
        report.problems.append(Problem("export", name, out, f"cannot be read: {_first_line(exc)}"))
        return
    got = {r["chunk_id"]: r["content_hash"] for r in got_rows}
    missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
    changed = [c for c in want.keys() & got.keys() if want[c] != got[c]]
    if missing or extra or changed or len(got_rows) != len(want):
        report.problems.append(Problem(
            "export", name, out,
            f"does not match version {version} it names: {len(missing)} rows missing, {len(extra)} extra, "
            f"{len(changed)} changed, {len(got_rows)} rows against {len(want)} (stale: re-export it)"))


def pid_alive(pid: int) -> bool:
    """Whether a process of this machine with that id is alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _check_locks(db_uri: str, names: list[str], runs: list[dict[str, Any]], report: CheckReport) -> None:
    running = {r["run_id"] for r in runs if r.get("status") == "running"}
    if not is_local(db_uri):
        _check_leases(db_uri, names, running, report)
        return
    import socket

    from .locks import lock_path, lock_status

    host = socket.gethostname()
    for name in names:
        path = lock_path(db_uri, name)
        if not path.exists():
            continue
        report.locks += 1
        held, holder = lock_status(db_uri, name)
        if not holder or holder.get("host") != host or not isinstance(holder.get("pid"), int):
            continue  # another machine's process: its life cannot be seen from here
        pid, run = holder["pid"], holder.get("run_id")
        if pid_alive(pid):
            continue
        if held:
            report.problems.append(Problem("lock", name, str(path), f"held, but its holder pid {pid} (run {run}) is dead: "
                                           "another process holds it (a child that inherited it?)"))
        elif run in running:
            report.problems.append(Problem("lock", name, str(path), f"holder pid {pid} died holding it and the ledger "
                                           f"still says run {run} is running (grainline unlock marks it interrupted)"))


def _check_leases(db_uri: str, names: list[str], running: set[str], report: CheckReport) -> None:
    try:
        from .lease import read_lease
    except ImportError:
        return  # no obstore: no lease can have been written from here either
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc).timestamp()
    for name in names:
        try:
            holder = read_lease(db_uri, name)
        except Exception:  # noqa: BLE001 - no lease store, nothing to check
            continue
        if holder is None:
            continue
        report.locks += 1
        # Not renewed for a whole TTL past its expiry: its holder is dead.
        if now - holder.expires_ts() > holder.ttl_s and holder.run_id in running:
            report.problems.append(Problem("lock", name, f"{LOCK_DIR}/{name}.lease", f"lease of {holder.describe()} lapsed "
                                           f"and the ledger still says run {holder.run_id} is running"))


def problems_json(report: CheckReport) -> str:
    """The problems as a JSON list of {kind, table, where, reason}."""
    return json.dumps([p.as_dict() for p in report.problems], ensure_ascii=False)
