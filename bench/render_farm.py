"""The render farm: ad jobs through one API, rendered by 1, 2 and 3 worker processes that
share nothing but the broker (Redis) and an S3 store (SeaweedFS), each with its own data
directory, as separate machines would. Side by side in one run, with the same jobs on the
local disk (one worker) as the peer that shows what the object store costs.

Starts its own Redis, SeaweedFS (``running_seaweedfs``) and API (`castwork serve --no-voice
--no-workers`) on loopback. For each worker count: --jobs jobs (three formats each, narrated,
with music) are submitted at once, then polled to their end; throughput is jobs finished per
minute of wall time from the first submit to the last job done. Which process ran each stage
is read from the job records (``ran``).

    .venv/bin/python bench/render_farm.py [--jobs 3] [--workers 1,2,3] [--json FILE]

On one 2-core machine the workers compete for the same cores: this shows that the farm
spreads one job's formats over processes and what the store costs, not how it scales on
machines of their own (there each worker brings its cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ad_helpers import photo_bytes  # real photos, shared with the tests
from voice.monitoring.loadtest import free_port
from workers.storage.seaweed import running_seaweedfs
from workers.store import JobStore

KEY = "farm-merchant-key"
BUCKET_URL = "s3://castwork/farm"


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise TimeoutError(f"{what} not up in {timeout:.0f} s")


class Farm:
    """Processes started for one storage setting, stopped at the end."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.castwork = str(Path(sys.executable).with_name("castwork"))

    def start(self, cmd: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cmd, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            self.procs.remove(proc)

    def workers(self, n: int, tag: str, *, own_dirs: bool) -> list[subprocess.Popen[bytes]]:
        started = []
        for w in range(n):
            # A data directory of its own, as on another machine; else the API's.
            own = {"CASTWORK_JOBS__DIR": str(self.work / f"{tag}-worker{w}")} if own_dirs else {}
            cmd = [self.castwork, "worker", "--processes", "1", "--threads", "1"]
            started.append(self.start(cmd, f"{tag}-worker{w}", **own))
        return started


def run_batch(
    api: str, store: JobStore, jobs: int, photos: list[bytes], tag: str
) -> dict[str, Any]:
    client = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    files = [("images", (f"p{n}.jpg", p, "image/jpeg")) for n, p in enumerate(photos)]
    t0 = time.monotonic()
    ids = []
    for i in range(jobs):
        data = {"headline": f"Farm deal {tag} {i}", "price": "$19", "cta": "Shop now"}
        r = client.post("/v1/jobs", data=data, files=files)
        r.raise_for_status()
        ids.append(r.json()["id"])
    ends: dict[str, dict[str, Any]] = {}
    while len(ends) < len(ids) and time.monotonic() - t0 < 3600:
        for job_id in ids:
            if job_id not in ends:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in ("done", "failed", "cancelled"):
                    ends[job_id] = job
        time.sleep(0.5)
    wall = time.monotonic() - t0
    by_process: Counter[str] = Counter()
    spread = []  # processes that rendered each job's formats
    for job_id in ids:
        ran = store.get(job_id).ran
        renders = {v for k, v in ran.items() if k.startswith("render ")}
        spread.append(len(renders))
        by_process.update(v for k, v in ran.items() if k.startswith("render "))
    done = sum(1 for j in ends.values() if j["status"] == "done")
    problems = [f"{j['id']}: {j['status']} {j.get('error')}" for j in ends.values()
                if j["status"] != "done"]  # fmt: skip
    problems += [f"{i}: not finished" for i in ids if i not in ends]
    return {
        "jobs": jobs,
        "done": done,
        "wall_s": round(wall, 1),
        "jobs_per_min": round(done / (wall / 60), 2),
        "renders_per_process": sorted(by_process.values(), reverse=True),
        "processes_per_job": spread,
        "problems": problems,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=3, help="jobs per batch (3 formats each)")
    ap.add_argument("--workers", default="1,2,3", help="worker counts to run, in order")
    ap.add_argument("--no-local", action="store_true", help="skip the local-disk peer")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--out", type=Path, help="keep logs and files here")
    args = ap.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-farm-"))
    work.mkdir(parents=True, exist_ok=True)
    photos = [photo_bytes(n) for n in ("coffee", "chelsea", "astronaut")]
    results: dict[str, dict[str, Any]] = {}
    print(
        f"# castwork render farm — {os.cpu_count()} cores; {args.jobs} jobs per batch "
        "(9:16 + 1:1 + 16:9, narrated, music) through one API; each worker process has its "
        "own data directory, 1 thread",
        flush=True,
    )
    with ExitStack() as stack:
        s3 = stack.enter_context(running_seaweedfs(work / "seaweedfs"))
        redis_port = free_port()
        (work / "redis").mkdir(exist_ok=True)
        base_env = {
            **os.environ,
            "CASTWORK_BROKER__URL": f"redis://127.0.0.1:{redis_port}/0",
            "CASTWORK_API__KEYS": json.dumps({"farm": KEY}),
            "CASTWORK_LOG__TURN_LOG": str(work / "turns.jsonl"),
        }
        setups = [("s3", {**base_env, **s3.env(BUCKET_URL)})]
        if not args.no_local:
            setups.append(("local", {**base_env, "CASTWORK_JOBS__DIR": str(work / "shared")}))
        redis_farm = Farm(work, base_env)
        stack.callback(lambda: redis_farm.stop(list(redis_farm.procs)))
        redis_farm.start(
            [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
             "--bind", "127.0.0.1", "--save", "", "--dir", str(work / "redis")],
            "redis",
        )  # fmt: skip
        time.sleep(0.5)
        store = JobStore.from_url(f"redis://127.0.0.1:{redis_port}/0")
        for name, env in setups:
            farm = Farm(work, env)
            stack.callback(lambda f=farm: f.stop(list(f.procs)))
            api_port = free_port()
            own = {"CASTWORK_JOBS__DIR": str(work / "s3-api")} if name == "s3" else {}
            api = farm.start(
                [farm.castwork, "serve", "--no-voice", "--no-workers", "--port", str(api_port)],
                f"{name}-api",
                **own,
            )
            base = f"http://127.0.0.1:{api_port}"
            _wait_http(base + "/healthz", api, "API")
            # The peer: one worker on the API's own disk (what one box does today).
            for n in counts if name == "s3" else [1]:
                workers = farm.workers(n, f"{name}{n}", own_dirs=name == "s3")
                tag = f"{name}-{n}w"
                figures = run_batch(base, store, args.jobs, photos, tag)
                results[tag] = figures
                print(
                    f"  {tag:9s} {figures['done']}/{args.jobs} done in {figures['wall_s']:6.1f} s"
                    f"  {figures['jobs_per_min']:5.2f} jobs/min  renders per process "
                    f"{figures['renders_per_process']}  processes per job "
                    f"{figures['processes_per_job']}",
                    flush=True,
                )
                farm.stop(workers)
            farm.stop([api])

    print("\n| storage | worker processes | jobs | wall s | jobs/min | vs 1 worker (S3) |")
    print("|---|---|---|---|---|---|")
    one = results.get("s3-1w", {}).get("jobs_per_min") or float("nan")
    for tag, f in results.items():
        storage, n = tag.split("-")
        print(
            f"| {storage} | {n[:-1]} | {f['done']}/{f['jobs']} | {f['wall_s']} | "
            f"{f['jobs_per_min']} | {f['jobs_per_min'] / one:.2f}x |"
        )
    problems = [p for f in results.values() for p in f["problems"]]
    for p in problems:
        print("PROBLEM:", p)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
