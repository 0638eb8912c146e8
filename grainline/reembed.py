"""Re-embedding: the rows of an existing table go into another model's table with new
vectors. No source is read and nothing is chunked. Two ways:

- :func:`reembed`, another base model: its vectors of the stored chunk texts. Chunk
  boundaries depend on the model only through its tokenizer and window (the chunkers
  split what does not fit; ``chunker_params`` records both), so reuse is valid only
  when the new model's window is the same and its tokenizer counts every stored chunk
  exactly as the old one did. Otherwise :class:`ReembedError` says why, and the
  documents must be ingested again. The rows get the chunker keys and chunk ids that
  an ingestion with the new model computes, so that ingestion afterwards finds every
  document unchanged.
- :func:`reembed_with_head`, a tuned head: applied to the stored base vectors (the
  head acts on final vectors, so this equals embedding the text with the head).

Both write only through :class:`ChunkStore`, under the target table's write lock, and
record the run in the ledger (flow ``reembed``), with the versions before and after.

May import: chunkers, documents, embedding, errors, storage.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa

from grainline.chunkers import ChunkContext, chunker_key, chunker_params, settings_for
from grainline.documents import Chunk, sha256_hex
from grainline.embedding import Embedder, EmbedderSettings, Head, base_identity_of, get_embedder
from grainline.errors import TerminalError
from grainline.storage.chunks import ChunkStore, connect, open_table_if_exists
from grainline.storage.ledger import RunCounts, RunRecord, new_run_id, recorded_run, utcnow
from grainline.storage.maintenance import MaintenanceSettings, maintain_after_run
from grainline.storage.sql import in_list

# Parameters that describe the model, not the chunker's own settings.
_CONTEXT_KEYS = ("strategy", "tokens", "model_window", "model_tokenizer")
_CHUNK_FIELDS = ("chunk_id", "doc_id", "strategy", "chunker_key", "params", "ordinal", "start", "end", "text",
                 "n_tokens", "n_model_tokens", "exceeds_model_limit", "handling")
# How long a re-embedding waits for the target table's write lock (as an ingestion does).
LOCK_TIMEOUT_S = 6 * 3600


class ReembedError(TerminalError, ValueError):
    """The stored chunks cannot be reused for the new model; the message says why."""


def translate_params(params: str, embedder: Embedder) -> str:
    """The parameters an ingestion with ``embedder`` computes for the chunker that
    produced ``params``; ReembedError when that chunker would cut differently."""
    old = json.loads(params)
    strategy = old.get("strategy")
    if "model_window" not in old:
        raise ReembedError(f"chunker {strategy!r} ran without a model window ({params}); its chunks never fitted a model")
    cs = settings_for(strategy, **{k: v for k, v in old.items() if k not in _CONTEXT_KEYS})
    new = chunker_params(strategy, cs, ChunkContext.default(embedder.window))
    mine = json.loads(new)
    if mine["model_window"] != old["model_window"]:
        raise ReembedError(
            f"model window differs: the chunks of {strategy!r} were cut for {old['model_window']} tokens, "
            f"{embedder.identity.model_id!r} takes {mine['model_window']}"
        )
    if {k: v for k, v in mine.items() if k != "model_tokenizer"} != {k: v for k, v in old.items() if k != "model_tokenizer"}:
        raise ReembedError(f"chunker parameters differ: stored {params}, now {new}")
    return new


def _scan(table: Any, columns: list[str], batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
    """Stream selected columns of a table, ``batch_rows`` rows at a time."""
    return iter(table.search().select(columns).limit(None).to_batches(batch_rows))


def check_tokenizer(table: Any, embedder: Embedder) -> int:
    """Count every stored chunk with the new model's tokenizer; ReembedError naming the
    first chunk whose count differs. Returns the number of chunks checked."""
    counter = embedder.window.counter
    n = 0
    for batch in _scan(table, ["chunk_id", "text", "n_model_tokens"]):
        cols = batch.to_pydict()
        for cid, text, stored, now in zip(cols["chunk_id"], cols["text"], cols["n_model_tokens"], counter.count_many(cols["text"])):
            if stored != now:
                raise ReembedError(
                    f"tokenizer differs: chunk {cid} has {stored} model tokens stored, {now} with "
                    f"{embedder.identity.model_id!r}'s tokenizer ({text[:60]!r})"
                )
        n += len(cols["chunk_id"])
    return n


def _locked_run(db: str, rec: RunRecord, dim: int, write: Callable[[ChunkStore, RunCounts], None],
                maintenance: MaintenanceSettings, lock_timeout_s: float) -> RunRecord:
    """Run ``write`` on the target table (``rec.table_name``) under its write lock,
    recorded in the ledger (:func:`grainline.storage.ledger.recorded_run`), with
    maintenance after a successful write."""
    with recorded_run(db, rec, lambda: ChunkStore(db, rec.table_name, dim), lambda t: t.version(),
                      lock_timeout_s) as target:
        write(target, rec.counts)
        if target.exists:
            maintain_after_run(target.table, maintenance, rec)  # records its own failure, never raises
    return rec


def reembed(
    db: str,
    from_table: str,
    embedder_settings: EmbedderSettings,
    to_table: str | None = None,
    batch_docs: int = 64,
    maintenance: MaintenanceSettings | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> RunRecord:
    """Embed the chunks of ``from_table`` with another model into that model's table
    (or ``to_table``), one commit per ``batch_docs`` documents. Documents the target
    already holds with the same content and keys are skipped, so a re-run (or a run
    after a crash) embeds only what is missing."""
    source = open_table_if_exists(connect(db), from_table)
    if source is None:
        raise ValueError(f"no table {from_table!r} in {db!r}")
    embedder = get_embedder(embedder_settings)
    ident = embedder.identity
    target_table = to_table or ident.table_name
    if target_table == from_table:
        raise ReembedError(f"{from_table!r} already is the table of {ident.model_id!r}; nothing to re-embed")
    t0 = time.perf_counter()
    keys: dict[str, str] = {}  # old chunker key -> new params
    for batch in _scan(source, ["chunker_key", "params"]):
        for key, params in zip(batch.column("chunker_key").to_pylist(), batch.column("params").to_pylist()):
            if key not in keys:
                keys[key] = translate_params(params, embedder)
    n_checked = check_tokenizer(source, embedder)
    new_keys = {k: chunker_key(json.loads(p)["strategy"], p) for k, p in keys.items()}
    run_id = new_run_id("reembed")
    rec = RunRecord(
        run_id=run_id, flow="reembed", source=f"table:{from_table}", table_name=target_table, model_id=ident.model_id,
        parameters={"from_table": from_table, "model": ident.as_dict(), "chunker_keys": new_keys, "batch_docs": batch_docs,
                    "chunks_checked": n_checked},
    )
    rec.counts.add_time("check", time.perf_counter() - t0)
    return _locked_run(db, rec, ident.dim,
                       lambda target, counts: _copy(source, target, embedder, keys, new_keys, run_id, batch_docs, counts),
                       maintenance or MaintenanceSettings(), lock_timeout_s)


def _copy(source: Any, target: ChunkStore, embedder: Embedder, keys: dict[str, str], new_keys: dict[str, str],
          run_id: str, batch_docs: int, counts: RunCounts) -> None:
    """Documents of ``source`` into ``target`` in batches: rows rewritten, vectors new."""
    states = target.doc_states()
    doc_hashes: dict[str, dict[str, str]] = {}
    for batch in _scan(source, ["doc_id", "chunker_key", "doc_hash"]):
        for d, k, h in zip(*(batch.column(c).to_pylist() for c in ("doc_id", "chunker_key", "doc_hash"))):
            doc_hashes.setdefault(d, {})[new_keys[k]] = h
    todo = []
    for d, hashes in sorted(doc_hashes.items()):
        counts.docs_seen += 1
        st = states.get(d)
        if st is not None and all(st.hashes.get(k) == h for k, h in hashes.items()):
            counts.docs_unchanged += 1
        else:
            todo.append((d, "added" if st is None else "updated"))
    ident = embedder.identity
    for i in range(0, len(todo), batch_docs):
        group = todo[i : i + batch_docs]
        t0 = time.perf_counter()
        rows = source.search().where(in_list("doc_id", [d for d, _ in group])).limit(None).to_arrow()
        rows = rows.select([f.name for f in target.schema if f.name != "vector"])
        cols = rows.to_pydict()
        chunks = [Chunk(**{f: cols[f][j] for f in _CHUNK_FIELDS}) for j in range(rows.num_rows)]
        counts.add_time("read", time.perf_counter() - t0)
        t0 = time.perf_counter()
        wanted: dict[str, Chunk] = {}
        for c in chunks:
            wanted.setdefault(c.content_hash, c)
        known = target.vectors_by_hash(set(wanted)) if target.exists else {}
        vectors = {h: v for h, (v, _) in known.items()}
        n_windows = {h: nw for h, (_, nw) in known.items()}
        fresh = [c for h, c in wanted.items() if h not in vectors]
        if fresh:
            vecs, nws = embedder.embed_chunks(fresh)
            for c, v, nw in zip(fresh, vecs, nws):
                vectors[c.content_hash], n_windows[c.content_hash] = v, nw
        counts.chunks_embedded += len(fresh)
        counts.chunks_reused += len(chunks) - len(fresh)
        counts.add_time("embed", time.perf_counter() - t0)
        t0 = time.perf_counter()
        params = [keys[c.chunker_key] for c in chunks]
        now = utcnow()
        cols.update(
            chunk_id=[sha256_hex(c.doc_id, c.strategy, p, str(c.start), str(c.end)) for c, p in zip(chunks, params)],
            chunker_key=[new_keys[c.chunker_key] for c in chunks], params=params,
            n_windows=[n_windows[c.content_hash] for c in chunks], model_id=[ident.model_id] * len(chunks),
            model_max_seq_length=[ident.max_seq_length] * len(chunks), run_id=[run_id] * len(chunks),
            ingested_at=[now] * len(chunks),
        )
        arr = np.asarray([vectors[c.content_hash] for c in chunks], dtype=np.float32).reshape(-1, ident.dim)
        cols["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel(), pa.float32()), ident.dim)
        res = target.upsert_documents(pa.Table.from_pydict(cols, schema=target.schema), [d for d, _ in group],
                                      sorted(set(new_keys.values())))
        counts.chunks_written += res["inserted"] + res["updated"]
        counts.chunks_deleted += res["deleted"]
        counts.docs_added += sum(1 for _, s in group if s == "added")
        counts.docs_updated += sum(1 for _, s in group if s == "updated")
        counts.add_time("write", time.perf_counter() - t0)


def reembed_with_head(db: str, head_path: str | Path, source_table: str | None = None, target_table: str | None = None,
                      batch_rows: int = 4096, lock_timeout_s: float = LOCK_TIMEOUT_S) -> dict[str, Any]:
    """Apply a head to the stored vectors of a base-model table, writing every row into
    the tuned model's table, replacing what it held. The base model is not run: the
    head acts on final vectors, so this equals embedding the text with the head.

    The source defaults to the base model's table and the target to the tuned model's
    (``ModelIdentity.table_name`` with the head's hash). Returns the source, target,
    rows written, the tuned model id, the target's version, the seconds taken and the
    ledger's run id."""
    head = Head.load(head_path)
    base = base_identity_of(head)
    tuned = replace(base, head=head.hash8)
    source_table = source_table or base.table_name
    target_table = target_table or tuned.table_name
    if source_table == target_table:
        raise ValueError(f"source and target table are both {source_table!r}")
    src = open_table_if_exists(connect(db), source_table)
    if src is None:
        raise ValueError(f"no table {source_table!r} in {db!r} to re-embed")
    models = set(src.search().select(["model_id"]).limit(None).to_arrow().column("model_id").unique().to_pylist())
    if not models:
        raise ValueError(f"table {source_table!r} in {db!r} is empty; nothing to re-embed")
    if models - {base.model_id}:
        raise ValueError(f"table {source_table!r} holds vectors of {sorted(models)}; the head was trained on {base.model_id}")
    t0 = time.perf_counter()
    rec = RunRecord(
        run_id=new_run_id("reembed"), flow="reembed", source=f"table:{source_table}", table_name=target_table, model_id=tuned.model_id,
        parameters={"from_table": source_table, "model": tuned.as_dict(), "head": str(Path(head_path).resolve()),
                    "batch_rows": batch_rows},
    )

    def write(target: ChunkStore, counts: RunCounts) -> None:
        counts.chunks_deleted += target.delete("true")  # the target is replaced, not merged into
        docs: set[str] = set()
        # Batches are read here and written one by one: LanceDB consumes a generator given
        # to a write on its own event loop, where reading the source again deadlocks.
        for batch in _scan(src, list(target.schema.names), batch_rows):
            t1 = time.perf_counter()
            tbl = pa.Table.from_batches([batch]).select(target.schema.names)
            vecs = tbl.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, head.dim)
            tbl = tbl.set_column(tbl.schema.get_field_index("vector"), "vector",
                                 pa.FixedSizeListArray.from_arrays(pa.array(head.apply(vecs).ravel(), pa.float32()), head.dim))
            tbl = tbl.set_column(tbl.schema.get_field_index("model_id"), "model_id",
                                 pa.array([tuned.model_id] * tbl.num_rows, pa.string()))
            counts.add_time("embed", time.perf_counter() - t1)
            t1 = time.perf_counter()
            doc_ids = sorted(set(tbl.column("doc_id").to_pylist()))
            # all_new: the target was emptied above and the source holds each chunk once,
            # so every row is appended.
            res = target.upsert_documents(tbl, doc_ids, sorted(set(tbl.column("chunker_key").to_pylist())), all_new=True)
            counts.chunks_written += res["inserted"] + res["updated"]
            docs.update(doc_ids)
            counts.add_time("write", time.perf_counter() - t1)
        counts.docs_seen = counts.docs_added = len(docs)

    rec = _locked_run(db, rec, head.dim, write, MaintenanceSettings(enabled=False), lock_timeout_s)
    return {"source": source_table, "target": target_table, "rows": rec.counts.chunks_written, "model_id": tuned.model_id,
            "version": rec.version_after, "seconds": round(time.perf_counter() - t0, 3), "run_id": rec.run_id}
