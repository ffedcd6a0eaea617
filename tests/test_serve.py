"""`castwork serve`: which Redis it uses (never one that would lose queued jobs without a
word), and the whole system up and down."""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from castwork.serve import ensure_redis, persistence
from tests.ad_helpers import ROOT, wait_for, worker_env
from tests.conftest import ON_CI, _free_port
from workers.settings import load_settings


@contextmanager
def redis_server(workdir: Path, *options: str) -> Iterator[int]:
    """A redis-server of the test's own on a free port, started with ``options``."""
    binary = shutil.which("redis-server")
    if binary is None:
        if ON_CI:
            pytest.fail("redis-server is not installed (./setup.sh installs it)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(port), 10, f"redis-server on port {port}", every_s=0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(port: int) -> bool:
    try:  # a connection, not a PING: a server with a password answers that with NOAUTH
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def test_starts_a_persistent_redis_when_none_answers(tmp_path: Path) -> None:
    port = _free_port()
    settings = load_settings(data_dir=tmp_path)
    managed = ensure_redis(settings, port=port)
    try:
        assert managed.process is not None
        client = redis.Redis.from_url(managed.url)
        assert client.config_get("appendonly")["appendonly"] == "yes"  # queued jobs survive
        assert Path(client.config_get("dir")["dir"]) == tmp_path / "redis"
        again = ensure_redis(settings, port=port)  # now one answers: reused, not started
        assert again.process is None and again.url == managed.url
    finally:
        managed.stop()
    assert managed.process.poll() is not None


@pytest.mark.reliability("input", "castwork serve finds a Redis without an append-only file")
def test_a_redis_that_does_not_persist_is_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Debian's redis-server (the one on 6379 here) runs with appendonly no: serve used to
    take it, and jobs queued there died with its next restart. Now it starts its own."""
    with redis_server(tmp_path / "theirs", "--appendonly", "no") as port:
        assert persistence(f"redis://127.0.0.1:{port}/0") == ("off", "appendonly no")
        settings = load_settings(data_dir=tmp_path)
        with caplog.at_level(logging.INFO, logger="castwork.serve"):
            managed = ensure_redis(settings, port=port)
        try:
            assert managed.process is not None, "it reused a Redis that does not persist"
            assert not managed.url.endswith(f":{port}/0")
            client = redis.Redis.from_url(managed.url)
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert Path(client.config_get("dir")["dir"]) == tmp_path / "redis"
            client.close()
            said = caplog.text
            assert f"not using the Redis on 127.0.0.1:{port}" in said
            assert "appendonly no" in said and "started redis-server" in said
        finally:
            managed.stop()


def test_a_redis_that_persists_is_reused(tmp_path: Path) -> None:
    with redis_server(tmp_path / "theirs", "--appendonly", "yes") as port:
        managed = ensure_redis(load_settings(data_dir=tmp_path), port=port)
        assert managed.process is None and managed.url == f"redis://127.0.0.1:{port}/0"
        assert not (tmp_path / "redis").exists()  # nothing of ours started


@pytest.mark.reliability("input", "castwork serve finds a Redis that will not say if it persists")
def test_a_redis_that_hides_its_config_is_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CONFIG renamed away (as hardened set-ups do): whether it persists is unknown, and
    unknown is not good enough for the job queue."""
    with redis_server(
        tmp_path / "theirs", "--appendonly", "yes", "--rename-command", "CONFIG", ""
    ) as port:
        kept, said = persistence(f"redis://127.0.0.1:{port}/0")
        assert kept == "unknown" and "CONFIG" in said
        with caplog.at_level(logging.INFO, logger="castwork.serve"):
            managed = ensure_redis(load_settings(data_dir=tmp_path), port=port)
        try:
            assert managed.process is not None
            assert "does not say whether it keeps an append-only file" in caplog.text
        finally:
            managed.stop()


def test_our_own_redis_left_running_is_reused_not_doubled(tmp_path: Path) -> None:
    """A serve killed with SIGKILL leaves its Redis running on the spare port; the next
    serve must take that one back, not start a second server on the same append-only file."""
    with redis_server(tmp_path / "theirs", "--appendonly", "no") as port:
        settings = load_settings(data_dir=tmp_path)
        first = ensure_redis(settings, port=port)
        try:
            again = ensure_redis(settings, port=port)
            assert again.process is None and again.url == first.url
        finally:
            first.stop()


def test_a_configured_broker_is_used_with_a_warning_and_no_password_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server(tmp_path / "theirs", "--requirepass", "s3cret-pw") as port:
        url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
        with caplog.at_level(logging.INFO, logger="castwork.serve"):
            managed = ensure_redis(load_settings(data_dir=tmp_path, broker={"url": url}))
        assert managed.process is None and managed.url == url  # the operator's choice
        assert "keeps no append-only file" in caplog.text
        assert f"redis://:***@127.0.0.1:{port}/0" in caplog.text
        assert "s3cret-pw" not in caplog.text


def test_serve_runs_api_and_workers_and_stops_cleanly(redis_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = worker_env(redis_url, tmp_path / "jobs")
    proc = subprocess.Popen(
        [sys.executable, "-m", "castwork.cli", "serve", "--no-voice", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "the API to answer")
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "<form" in page.text
        assert httpx.get(f"http://127.0.0.1:{port}/v1/templates", timeout=5).status_code == 200
        time.sleep(1.0)
        workers = subprocess.run(
            ["pgrep", "-f", "dramatiq workers.app:broker", "-P", str(proc.pid)],
            capture_output=True,
            text=True,
        )
        worker_pids = [int(pid) for pid in workers.stdout.split()]
        assert worker_pids, "serve did not start a worker"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()[-2000:]
    for pid in worker_pids:  # no worker left running after serve stopped
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
