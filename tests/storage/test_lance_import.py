"""LanceDB imported with its REST namespace client's ``__init__`` deferred: tables still
open, write and search, and the client package still works when something asks for it."""

from __future__ import annotations

import subprocess
import sys


def test_lancedb_works_without_the_rest_client_init_and_the_client_loads_on_demand(tmp_path):
    code = f"""
import sys
from grainline.storage.lance_import import import_lancedb
lancedb = import_lancedb()
assert "lance_namespace_urllib3_client.api" not in sys.modules, "the REST API classes were imported"
db = lancedb.connect({str(tmp_path / "db")!r})
t = db.create_table("t", data=[{{"id": 1, "text": "tide tables", "vector": [0.1, 0.2]}},
                              {{"id": 2, "text": "bee dances", "vector": [0.9, 0.1]}}])
assert t.search([0.1, 0.2]).limit(1).to_list()[0]["id"] == 1
import lance_namespace_urllib3_client as client
assert client.ApiClient.__name__ == "ApiClient" and "lance_namespace_urllib3_client.api" in sys.modules
try:
    client.no_such_thing
except AttributeError:
    pass
else:
    raise AssertionError("a missing attribute must raise AttributeError")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
