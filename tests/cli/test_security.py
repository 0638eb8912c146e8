"""Security: ingestion reads only under its roots, ids never become paths, HTML is
parsed and never rendered or fetched, and credentials never reach the ledger, the
summary, the logs or the CLI output."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from grainline.documents import Document
from grainline.embedding import EmbedderSettings
from grainline.ingest import IngestSettings, run_ingest, summary_markdown
from grainline.readers import discover, file_id, iter_documents, read_file
from grainline.redact import check_uri, has_credentials, redact_options, redact_text, redact_uri
from grainline.storage.chunks import ChunkStore

from tests.conftest import write_files

# ----------------------------------------------------------------------------
# HTML is parsed, never rendered


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        type(self).hits.append(self.path)
        body = b"FETCHED-CONTENT"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_html_is_parsed_never_rendered_or_fetched(tmp_path):
    _Recorder.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        outside = write_files(tmp_path / "outside", {"frame.html": "<p>LOCAL-FRAME-CONTENT</p>"})
        page = f"""<html><head><title>Rivers</title>
<link rel="stylesheet" href="{url}/style.css"><script src="{url}/app.js"></script>
<script>document.write("INJECTED-BY-SCRIPT"); fetch("{url}/beacon");</script>
<meta http-equiv="refresh" content="0; url={url}/refresh"></head>
<body onload="document.body.innerHTML='ONLOAD-RAN'">
<p onclick="alert('ONCLICK-RAN')">Visible paragraph about rivers.</p>
<img src="{url}/pixel.png" onerror="document.write('ONERROR-RAN')">
<iframe src="{url}/frame.html">IFRAME-FALLBACK</iframe>
<iframe src="{(outside / 'frame.html').as_uri()}"></iframe>
<iframe srcdoc="&lt;p&gt;SRCDOC-CONTENT&lt;/p&gt;"></iframe>
<object data="{url}/object.html" type="text/html"></object><embed src="{url}/embed.swf">
<a href="javascript:document.write('HREF-RAN')">A link</a>
</body></html>"""
        src = write_files(tmp_path / "src", {"page.html": page})
        (doc,) = list(read_file(src / "page.html", src))
        assert isinstance(doc, Document), doc
        assert doc.title == "Rivers"
        # Main-content extraction may drop the lone link as chrome; the walk keeps it.
        assert doc.text in ("Visible paragraph about rivers.", "Visible paragraph about rivers.\n\nA link"), doc.text
        for marker in ("INJECTED", "ONLOAD", "ONCLICK", "ONERROR", "HREF-RAN", "FETCHED", "LOCAL-FRAME", "SRCDOC", "IFRAME-FALLBACK", "127.0.0.1"):
            assert marker not in doc.text
        assert _Recorder.hits == []  # nothing was fetched: not the scripts, frames, objects or images
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------
# Reading stays under the roots it is given


def test_glob_and_symlinks_stay_under_the_root(tmp_path):
    write_files(tmp_path / "outside", {"secret.txt": "outside the root"})
    src = write_files(tmp_path / "src", {"a/doc.txt": "inside the root"})
    (src / "a/escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    # '..' after a wildcard could only climb out of the root: refused, naming the pattern
    with pytest.raises(ValueError, match=r"'\.\.' after a wildcard"):
        discover(f"{src}/*/../../outside/*.txt")
    # a recursive glob does not follow a symlink out of the root, and says so
    items = list(iter_documents(f"{src}/**/*.txt"))
    assert [d.doc_id for d in items if isinstance(d, Document)] == [file_id(src / "a/doc.txt")]
    assert [(f.where, f.reason) for f in items if not isinstance(f, Document)] == [
        ("a/escape", "symlink points outside the ingested root")
    ]


def test_record_ids_never_become_paths(tmp_path, embedder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    work = tmp_path / "work"
    marker = uuid.uuid4().hex
    hostile = [f"../../escaped-{marker}", f"/tmp/abs-escape-{marker}", f"..\\..\\win-{marker}", f"a/../../b-{marker}"]
    lines = [json.dumps({"id": i, "text": f"Record {n} about the tides of the northern sea."}) for n, i in enumerate(hostile)]
    src = write_files(work / "src", {"records.jsonl": "\n".join(lines) + "\n"})
    pq.write_table(pa.table({"id": [f"../parquet-escape-{marker}"], "text": ["A parquet row about coral reefs."]}), src / "rows.parquet")
    before = {p for p in tmp_path.rglob("*")}
    rec = run_ingest(IngestSettings(source=str(src), db=str(work / "db"), strategies="paragraph", embedder=EmbedderSettings(device="cpu")))
    assert rec.counts.docs_failed == 0 and rec.counts.docs_added == 5
    store = ChunkStore(str(work / "db"), embedder.identity.table_name, embedder.identity.dim)
    # a record's id is scoped to its file's id: stored as data, never resolved as a path
    jsonl, parquet = file_id(src / "records.jsonl"), file_id(src / "rows.parquet")
    assert {r["doc_id"] for b in store.scan(["doc_id"]) for r in b.to_pylist()} == {
        *(f"{jsonl}#{h}" for h in hostile), f"{parquet}#../parquet-escape-{marker}"}
    # every file the run wrote is inside the db folder, and none is named after an id
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.is_relative_to(work / "db") for p in new)
    assert not any(marker in p.name for p in new)
    assert not Path(f"/tmp/abs-escape-{marker}").exists()
    # the export holds its partitions and its version marker, nothing named from a record id
    assert sorted(p.name for p in (work / "db/parquet" / embedder.identity.table_name).iterdir()) == ["_duckdb.sql", "_grainline_export.json", "strategy=paragraph"]


# ----------------------------------------------------------------------------
# Credentials


def test_redaction_of_uris_and_storage_options():
    cases = {
        "s3://AKIAEXAMPLE:wJalr/K7MDENG+bPxRfi@bucket/db": "s3://***@bucket/db",
        "gs://bucket/db?sas_token=SECRET&region=eu": "gs://bucket/db?sas_token=***&region=eu",
        "https://ghp_TOKEN@example.com/db": "https://***@example.com/db",
        "abfs://container@account.dfs.core.windows.net/db": "abfs://container@account.dfs.core.windows.net/db",
        "s3://bucket/path/v@2/db": "s3://bucket/path/v@2/db",
        "/data/grainline": "/data/grainline",
    }
    for uri, shown in cases.items():
        assert redact_uri(uri) == shown
        assert has_credentials(uri) == (shown != uri)
    assert redact_text("could not open s3://K:SECRET@b/x: denied") == "could not open s3://***@b/x: denied"
    opts = {"aws_access_key_id": "AKIA", "aws_secret_access_key": "SECRET", "session_token": "T", "region": "eu-west-1",
            "endpoint": "http://minio:SECRET@localhost:9000", "allow_http": "true"}
    assert redact_options(opts) == {"aws_access_key_id": "***", "aws_secret_access_key": "***", "session_token": "***",
                                    "region": "eu-west-1", "endpoint": "http://***@localhost:9000", "allow_http": "true"}
    with pytest.raises(ValueError, match=r"s3://\*\*\*@bucket/db.*environment") as exc:
        check_uri("s3://AKIAEXAMPLE:PW-SENTINEL@bucket/db")
    assert "PW-SENTINEL" not in str(exc.value)


SENTINELS = {
    "AWS_ACCESS_KEY_ID": "AKIA-SENTINEL-ID-7f3a",
    "AWS_SECRET_ACCESS_KEY": "SENTINEL-SECRET-9c1e",
    "AWS_SESSION_TOKEN": "SENTINEL-SESSION-42d0",
    "AZURE_STORAGE_ACCOUNT_KEY": "SENTINEL-AZURE-b81f",
    "GOOGLE_SERVICE_ACCOUNT_KEY": "SENTINEL-GCS-e6a2",
}
URI_SENTINEL = "URI-SENTINEL-5d9b"


@pytest.mark.usefixtures("prefect_harness")
def test_credentials_never_reach_ledger_logs_artifacts_or_cli(tmp_path, embedder, monkeypatch):
    import asyncio

    from prefect.client.orchestration import get_client

    from grainline.cli import app
    from grainline.storage.ledger import Ledger

    for k, v in SENTINELS.items():
        monkeypatch.setenv(k, v)
    src = write_files(tmp_path / "src", {"a.txt": "Owls\n\nOwls hunt at night and hear mice under snow.",
                                         "bad.txt": b"\x00binary"})
    db = str(tmp_path / "db")
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", str(src), "--db", db, "--strategy", "paragraph", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    outputs = [res.output]
    # a URI with credentials is refused before any flow run records it, and shown redacted
    bad_db = f"s3://AKIAEXAMPLE:{URI_SENTINEL}/x@bucket/db"
    for args in (["ingest", str(src), "--db", bad_db], ["eval", "--dataset", "squad:/nowhere.json", "--db", bad_db],
                 ["demo", "--db", bad_db]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "s3://***@bucket/db" in res.output and "carries credentials" in res.output, res.output
        outputs.append(res.output)
    with pytest.raises(ValueError) as exc:
        IngestSettings(source=str(src), db=bad_db)
    assert "s3://***@bucket/db" in str(exc.value)

    async def stored_by_prefect():
        async with get_client() as client:
            return await client.read_latest_artifacts(), await client.read_logs()

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the server in batches; send what is queued
    artifacts, logs = asyncio.run(stored_by_prefect())
    arts = [a.data for a in artifacts if a.key == "grainline-ingest-summary"]
    lines = [log.message for log in logs]  # the flow's log lines, as Prefect keeps them
    rows = Ledger(db).runs()
    assert rows and arts and any("failed: bad.txt" in line for line in lines), lines[-20:]
    stored_bytes = b"".join(p.read_bytes() for p in Path(db).rglob("*") if p.is_file())
    places = {"cli": "\n".join(outputs), "logs": "\n".join(lines), "ledger": json.dumps(rows, default=str),
              "artifact": "\n".join(map(str, arts)), "summary": summary_markdown(_record(rows[-1]))}
    for secret in [*SENTINELS.values(), URI_SENTINEL]:
        for where, text in places.items():
            assert secret not in text, f"{secret} leaked into the {where}"
        assert secret.encode() not in stored_bytes, f"{secret} leaked into a file under the db"


def _record(row: dict):
    from grainline.storage.ledger import RunCounts, RunRecord

    counts = RunCounts(**{k: row[k] for k in RunCounts.__dataclass_fields__ if k in row})
    return RunRecord(run_id=row["run_id"], flow=row["flow"], source=row["source"], table_name=row["table_name"],
                     model_id=row["model_id"], parameters=row["parameters"], status=row["status"], counts=counts,
                     version_before=row["version_before"], version_after=row["version_after"], error=row["error"])
