"""`grainline queries generate --llm` through the CLI in a subprocess, against a small
local HTTP server that speaks the OpenAI chat-completions protocol. The server STANDS
IN FOR A MODEL: it answers with questions built from the document in the prompt (some
with verbatim excerpts, one invented, one near-duplicate), so the filters, the cap, the
retry of a transient error, the response cache and the error paths are exercised
without a model."""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.evaluation.test_queries import cli, ingested  # noqa: F401 - the module fixture: the little corpus, ingested


class StandIn(ThreadingHTTPServer):
    """mode: ok | fail (HTTP 500 on every request after `ok_requests`) | notjson."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "ok"
        self.requests = 0
        self.failed_first = False
        self.ok_requests = 10**6
        self.auth: list[str | None] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802 - http.server's name
        srv: StandIn = self.server  # type: ignore[assignment]
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions" and req["model"] == "stand-in"
        srv.auth.append(self.headers.get("Authorization"))
        if not srv.failed_first:  # one transient failure, which must be retried
            srv.failed_first = True
            return self._send(503, b'{"error": "loading model"}')
        if srv.mode == "notjson":
            return self._send(200, b"<html>proxy error</html>", "text/html")
        if srv.mode == "fail" and srv.requests >= srv.ok_requests:
            return self._send(500, b'{"error": "boom"}')
        srv.requests += 1
        prompt = req["messages"][0]["content"]
        doc = prompt.split("<<<\n", 1)[1].rsplit("\n>>>", 1)[0]
        sents = [s.strip() for s in re.split(r"(?<=\.)\s+", doc) if len(s.strip()) > 20 and not s.strip().startswith("#")]
        qs = [{"question": f"What is said about {' '.join(s.split()[:4])}?", "excerpt": s} for s in sents]
        if qs:
            qs.insert(1, {"question": qs[0]["question"].replace("What is said", "what is said").rstrip("?"),
                          "excerpt": sents[0]})  # near-duplicate
        qs.insert(0, {"question": "What colour is the sky on Mars?", "excerpt": "The Martian sky is butterscotch."})
        content = "```json\n" + json.dumps({"questions": qs}) + "\n```"
        body = {"id": "x", "object": "chat.completion", "model": "stand-in",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 30, "total_tokens": len(prompt) // 4 + 30}}
        self._send(200, json.dumps(body).encode())


@pytest.fixture
def stand_in():
    srv = StandIn()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _gen(db, out, url, home, *extra, env_key=True):
    return cli("queries", "generate", "--llm", "--base-url", url, "--model", "stand-in", "--db", db, "--out", str(out),
               "--per-doc", "2", "--retries", "2", *extra, home=home)


def test_llm_generation_filters_caps_retries_and_resumes(ingested, stand_in, tmp_path):  # noqa: F811
    _root, db, table = ingested
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    out, home = tmp_path / "llm.jsonl", str(tmp_path / "ph")
    # Interrupted: the endpoint fails for good after two documents.
    stand_in.mode, stand_in.ok_requests = "fail", 2
    res = _gen(db, out, url, home)
    assert res.returncode == 1 and "generation stopped: POST " in res.stderr and "HTTP 500" in res.stderr
    assert "Traceback" not in res.stderr
    header = json.loads(out.read_text().splitlines()[0])
    kept_first = header["n_queries"]
    assert kept_first >= 2 and header["provenance"]["error"]
    # Resumed: the two finished documents come from the cache, two are asked for.
    stand_in.mode = "ok"
    res = _gen(db, out, url, home)
    assert res.returncode == 0, res.stderr
    assert stand_in.requests == 4
    assert "2 cached responses" in res.stdout and "tokens: " in res.stdout and "[llm] 4/4 documents" in res.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    header, queries = lines[0], lines[1:]
    prov = header["provenance"]
    assert (prov["generator"], prov["llm_model"], prov["table"]) == ("llm", "stand-in", table)
    assert len(prov["prompt_hash"]) == 16 and prov["prompt_tokens"] > 0 and prov["completion_tokens"] == 120
    from grainline.evaluation.corpus import stored_documents
    from grainline.storage.chunks import connect

    docs = stored_documents(connect(db).open_table(table))
    per_doc: dict[str, int] = {}
    for q in queries:
        (sp,) = q["spans"]
        per_doc[sp["doc_id"]] = per_doc.get(sp["doc_id"], 0) + 1
        assert q["text"].startswith("What is said about ")
        assert len(docs[sp["doc_id"]].text[sp["start"]:sp["end"]]) > 20
    assert max(per_doc.values()) == 2 and len(per_doc) == 4
    reasons = " | ".join(u["reason"] for u in header["unresolved"])
    assert "does not occur verbatim" in reasons and "near-duplicate of llm:" in reasons and "over the cap of 2" in reasons
    assert set(stand_in.auth) == {None}  # no key in the environment: none sent


def test_llm_endpoint_errors_are_one_line(ingested, stand_in, tmp_path):  # noqa: F811
    _root, db, _ = ingested
    home = str(tmp_path / "ph")
    stand_in.mode = "notjson"
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    res = _gen(db, tmp_path / "a.jsonl", url, home)
    assert res.returncode == 1 and "the response is not JSON" in res.stderr and "for document '" in res.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    res = _gen(db, tmp_path / "b.jsonl", f"http://127.0.0.1:{closed}/v1", home, "--retries", "1")
    assert res.returncode == 1 and "gave up after 2 tries" in res.stderr and "Traceback" not in res.stderr
    assert len([x for x in res.stderr.splitlines() if x.startswith("error:")]) == 1
