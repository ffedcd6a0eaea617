"""A burst of ad jobs through the HTTP API: none lost, none duplicated, throughput per worker.

Starts its own Redis (append-only file), the API (`castwork serve --no-voice --no-workers`)
and --workers worker processes, all on loopback. Then --jobs jobs are submitted at once from 8
client threads, each with a unique Idempotency-Key; every 10th is submitted twice (a client
retrying after a lost answer) and every 10th other one carries a truncated photo (it must end
`failed` with a reason). 429s (the per-merchant active-job limit) are retried after their
Retry-After, as a client should. Then every job is polled to its end and checked: done with
one MP4 per format (probed), or failed with a reason; the API lists exactly one job per key.

    .venv/bin/python bench/ad_burst.py [--jobs 50] [--workers 1] [--threads 1] [--json FILE]
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ad_helpers import photo_bytes  # real photos, shared with the tests
from voice.monitoring.loadtest import free_port

KEY = "burst-merchant-key"


@dataclass
class Submitted:
    index: int
    job_id: str = ""
    bad: bool = False
    retried_429: int = 0
    resubmitted_same: bool | None = None
    submit_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise TimeoutError(f"{what} not up in {timeout:.0f} s")


def _submit(client: httpx.Client, index: int, photos: list[bytes], bad: bool) -> Submitted:
    s = Submitted(index, bad=bad)
    files = [("images", (f"p{n}.jpg", p, "image/jpeg")) for n, p in enumerate(photos)]
    if bad:  # a real JPEG header, then nothing: passes the API's type sniff, fails decoding
        files[0] = ("images", ("broken.jpg", photos[0][: len(photos[0]) // 3], "image/jpeg"))
    data = {"headline": f"Burst deal number {index}", "price": "$9", "formats": "1:1"}
    headers = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": f"burst-{index}"}
    t0 = time.monotonic()
    for attempt in range(2 if index % 10 == 0 else 1):
        while True:
            r = client.post("/v1/jobs", data=data, files=files, headers=headers, timeout=60)
            if r.status_code == 429:
                s.retried_429 += 1
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            break
        if r.status_code not in (200, 201):
            s.errors.append(f"{r.status_code} {r.text[:200]}")
            return s
        job_id = r.json()["id"]
        if attempt == 0:
            s.job_id = job_id
            s.submit_s = time.monotonic() - t0
        else:
            s.resubmitted_same = job_id == s.job_id and r.status_code == 200
    return s


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width,height",
         "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1, help="worker processes")
    ap.add_argument("--threads", type=int, default=1, help="threads per worker process")
    ap.add_argument("--timeout", type=float, default=3600, help="give up after this many s")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--out", type=Path, help="keep jobs, logs and Redis files here")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-burst-"))
    work.mkdir(parents=True, exist_ok=True)
    redis_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "CASTWORK_BROKER__URL": f"redis://127.0.0.1:{redis_port}/0",
        "CASTWORK_JOBS__DIR": str(work / "jobs"),
        "CASTWORK_API__KEYS": json.dumps({"burst": KEY}),
        "CASTWORK_LOG__TURN_LOG": str(work / "turns.jsonl"),
    }
    castwork = str(Path(sys.executable).with_name("castwork"))
    procs: list[subprocess.Popen[bytes]] = []
    logs = []

    def start(cmd: list[str], name: str) -> subprocess.Popen[bytes]:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed at the end
        logs.append(log)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    photos = [photo_bytes(n) for n in ("coffee", "chelsea", "astronaut")]
    try:
        (work / "redis").mkdir(exist_ok=True)
        redis = start(
            [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
             "--bind", "127.0.0.1", "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--dir", str(work / "redis")],
            "redis",
        )  # fmt: skip
        time.sleep(0.5)
        if redis.poll() is not None:
            raise RuntimeError("redis-server did not start")
        api = start(
            [castwork, "serve", "--no-voice", "--no-workers", "--port", str(api_port)], "api"
        )
        _wait_port(api_port, api, "API")
        for w in range(args.workers):
            start(
                [castwork, "worker", "--processes", "1", "--threads", str(args.threads)],
                f"worker{w}",
            )
        print(
            f"# castwork ad burst — {os.cpu_count()} cores; {args.jobs} jobs (1:1, narrated, "
            f"music) through the API; {args.workers} worker process(es) x {args.threads} thread(s)",
            flush=True,
        )
        client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}")
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            subs = list(
                pool.map(lambda i: _submit(client, i, photos, bad=i % 10 == 5), range(args.jobs))
            )
        submitted_s = time.monotonic() - t0
        print(f"submitted in {submitted_s:.1f} s; 429s retried: {sum(s.retried_429 for s in subs)}",
              flush=True)  # fmt: skip
        auth = {"Authorization": f"Bearer {KEY}"}
        ends: dict[str, dict[str, Any]] = {}
        done_at: dict[str, float] = {}
        ids = [s.job_id for s in subs if s.job_id]
        last_print = 0.0
        while len(ends) < len(ids) and time.monotonic() - t0 < args.timeout:
            for job_id in ids:
                if job_id in ends:
                    continue
                job = client.get(f"/v1/jobs/{job_id}", headers=auth, timeout=30).json()
                if job["status"] in ("done", "failed", "cancelled"):
                    ends[job_id] = job
                    done_at[job_id] = time.monotonic() - t0
            if time.monotonic() - last_print > 30:
                print(f"  {time.monotonic() - t0:5.0f} s: {len(ends)}/{len(ids)} finished",
                      flush=True)  # fmt: skip
                last_print = time.monotonic()
            time.sleep(1.0)
        wall = time.monotonic() - t0
        listed = client.get("/v1/jobs", params={"limit": 100}, headers=auth).json()["jobs"]
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()

    # --- checks ------------------------------------------------------------------------------
    problems: list[str] = []
    for s in subs:
        problems += [f"job {s.index}: submit {e}" for e in s.errors]
        if s.resubmitted_same is False:
            problems.append(f"job {s.index}: a resubmission made a second job")
    lost = [i for i in ids if i not in ends]
    listed_ids = [j["id"] for j in listed]
    duplicated = len(listed_ids) - len(set(listed_ids)) + max(0, len(listed_ids) - len(ids))
    done = [j for j in ends.values() if j["status"] == "done"]
    failed = [j for j in ends.values() if j["status"] == "failed"]
    bad_ids = {s.job_id for s in subs if s.bad}
    for j in done:
        mp4s = list((work / "jobs").glob(f"*/{j['id']}/out/ad-*.mp4"))  # not preview.mp4
        if len(mp4s) != 1:
            problems.append(f"job {j['id']}: {len(mp4s)} MP4s for one format")
            continue
        info = _probe(mp4s[0])
        kinds = sorted(s["codec_type"] for s in info["streams"])
        if kinds != ["audio", "video"] or float(info["format"]["duration"]) < 5:
            problems.append(f"job {j['id']}: bad MP4 {kinds} {info['format']}")
        if j["id"] in bad_ids:
            problems.append(f"job {j['id']}: a broken photo rendered")
    for j in failed:
        if j["id"] not in bad_ids or not (j.get("error") or {}).get("message"):
            problems.append(f"job {j['id']}: failed: {j.get('error')}")
    times = sorted(done_at[j["id"]] for j in done)
    render_span = times[-1] - times[0] if len(times) > 1 else float("nan")
    per_worker = len(done) / (wall / 60) / args.workers
    result = {
        "jobs": args.jobs,
        "workers": args.workers,
        "threads": args.threads,
        "submitted_s": round(submitted_s, 1),
        "retried_429": sum(s.retried_429 for s in subs),
        "resubmitted": sum(s.resubmitted_same is not None for s in subs),
        "done": len(done),
        "failed": len(failed),
        "failed_expected": len(bad_ids),
        "lost": len(lost),
        "duplicated": duplicated,
        "wall_s": round(wall, 1),
        "jobs_per_min_per_worker": round(per_worker, 2),
        "time_to_done_p50_s": round(float(np.percentile(times, 50)), 1) if times else None,
        "time_to_done_p95_s": round(float(np.percentile(times, 95)), 1) if times else None,
        "render_span_s": round(render_span, 1),
        "problems": problems,
    }
    print(
        f"{len(done)} done, {len(failed)} failed (expected {len(bad_ids)}: broken photo), "
        f"{len(lost)} lost, {duplicated} duplicated, in {wall:.0f} s\n"
        f"throughput {per_worker:.2f} jobs/min per worker; time to done P50 "
        f"{result['time_to_done_p50_s']} s, P95 {result['time_to_done_p95_s']} s"
    )
    for p in problems:
        print("PROBLEM:", p)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 1 if problems or lost or duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
