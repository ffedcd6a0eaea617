"""`castwork serve`: a Redis of its own when none answers; the whole system up and down."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from tests.ad_helpers import ROOT, wait_for, worker_env
from tests.conftest import _free_port
from voice.config import load_settings
from workers.serve import ensure_redis


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


def test_serve_runs_api_and_workers_and_stops_cleanly(redis_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = worker_env(redis_url, tmp_path / "jobs")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "serve", "--no-voice", "--port", str(port)],
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
