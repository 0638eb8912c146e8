"""The object-store write lease (storage/lease.py) on a real S3-compatible server:
exclusive, renewed while its holder lives, lapsing within a TTL when the holder is
SIGKILLed, released at once when it finishes, broken on request."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from grainline.storage.lease import Lease, LeaseLost, LeaseSettings, LeaseTimeout, break_lease, read_lease
from grainline.storage.lock_protocol import TableLockTimeout
from grainline.storage.locks import TableLock

from tests.s3 import s3_server  # noqa: F401 - the fixture

# A short TTL keeps the lapse tests quick; the rule under test does not depend on it.
TTL = LeaseSettings(ttl_s=3.0)

HOLD = r"""
import sys, time
from grainline.storage.lease import Lease, LeaseSettings
lease = Lease(sys.argv[1], "chunks", 30, LeaseSettings(ttl_s=float(sys.argv[2])), run_id="run-held").acquire()
print("HELD", flush=True)
time.sleep(600)
"""


@pytest.fixture
def s3_env(s3_server, monkeypatch):  # noqa: F811
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


def hold_in_child(db: str, ttl: float, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, db, str(ttl)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    assert proc.stdout.readline().strip() == "HELD"
    return proc


def test_second_writer_waits_names_the_holder_once_and_times_out(s3_env, caplog):
    db = s3_env.uri("lease-wait")
    with Lease(db, "chunks", 5, TTL, run_id="run-a") as first:
        assert first.held
        caplog.set_level(logging.WARNING, "grainline.storage")
        t0 = time.monotonic()
        with pytest.raises(LeaseTimeout) as err:
            # Longer than the TTL: only renewals keep the first lease alive this long.
            Lease(db, "chunks", 2 * TTL.ttl_s, TTL).acquire()
        assert time.monotonic() - t0 >= 2 * TTL.ttl_s
        assert first.held
        msg = str(err.value)
        assert "'chunks'" in msg and f"pid {os.getpid()}" in msg and "run run-a" in msg and "grainline unlock" in msg
        assert isinstance(err.value, TableLockTimeout)
    waits = [r.getMessage() for r in caplog.records if "waiting for its write lease" in r.getMessage()]
    assert len(waits) == 1, waits
    assert "chunks" in waits[0] and "run run-a" in waits[0]
    # Released: the next writer gets it at once.
    t0 = time.monotonic()
    with Lease(db, "chunks", 5, TTL) as nxt:
        assert nxt.waited_s < 1 and time.monotonic() - t0 < 2


def test_a_sigkilled_holder_blocks_the_table_at_most_one_ttl(s3_env):
    db = s3_env.uri("lease-kill")
    child = hold_in_child(db, TTL.ttl_s, s3_env.env())
    assert read_lease(db, "chunks").run_id == "run-held"
    child.kill()
    child.wait()
    killed = time.monotonic()
    with Lease(db, "chunks", 60, TTL) as lease:
        waited = time.monotonic() - killed
        assert lease.held
    # At most a TTL after the last renewal, plus a poll: never the 60 s we would wait.
    assert waited <= TTL.ttl_s + TTL.poll_every_s + 1, waited


def test_table_lock_uses_the_lease_for_object_stores(s3_env):
    db = s3_env.uri("lease-tablelock")
    with TableLock(db, "chunks", timeout_s=5, run_id="run-t") as lock:
        assert lock.held
        assert read_lease(db, "chunks").run_id == "run-t"
        with pytest.raises(TableLockTimeout):
            TableLock(db, "chunks", timeout_s=0.5).acquire()
        # Other tables are independent.
        with TableLock(db, "other", timeout_s=1) as other:
            assert other.held
    assert read_lease(db, "chunks") is None


def test_a_broken_lease_is_noticed_by_its_holder(s3_env):
    db = s3_env.uri("lease-break")
    lease = Lease(db, "chunks", 5, TTL).acquire()
    broken = break_lease(db, "chunks")
    assert broken is not None and broken.holder == lease.id
    deadline = time.monotonic() + 3 * TTL.renew_s
    while lease.held and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(LeaseLost, match="taken over or broken"):
        lease.check()
    # Meanwhile another writer could take it; the old holder's release leaves that alone.
    with Lease(db, "chunks", 5, TTL) as nxt:
        lease.release()
        assert nxt.held and read_lease(db, "chunks").holder == nxt.id
    assert break_lease(db, "chunks") is None  # released: nothing to break


def test_ttl_is_bounded():
    with pytest.raises(ValueError):
        LeaseSettings(ttl_s=121)
    os.environ["GRAINLINE_LEASE_TTL_S"] = "7"
    try:
        assert LeaseSettings.from_env().ttl_s == 7
    finally:
        del os.environ["GRAINLINE_LEASE_TTL_S"]
