"""Faults injected for real into the ad-job system, each survived (or refused) with a reason.

- **Redis restarted mid-queue**: a Redis of the test's own, persisted as ``castwork serve``
  persists its managed Redis (an append-only file; :func:`castwork.serve.ensure_redis`, the
  same function, starts it), stopped while a job renders and others wait, started again
  from its directory. Every job ends ``done`` exactly once: none lost, none rendered twice,
  no message left over; the API answers 503 meanwhile and takes jobs again after.
- **Redis restarted while a retry waits**: a job's first render meets a full disk; its
  retry, waiting out its backoff inside the worker, outlives a Redis restart and renders
  once the disk has room again.
- **Output disk full**: a tiny tmpfs over a job's output directory (and one over another
  job's layer directory) fills up for real: the job fails with "No space left on device
  (ENOSPC)" after its retry budget, leaves no partial file, and the worker goes on.
- **Output directory read-only**: a read-only mount (root ignores ``chmod``, not ``ro``): the
  job fails at once, naming the read-only file system; the worker goes on.

Renders are counted by an ``ffmpeg`` first on the worker's PATH that logs each render's
temporary output file and execs the real one: the evidence for "rendered once" and for a
bounded number of attempts. Renders are kept cheap: one 1:1 format, no narration, no music,
x264 ``ultrafast`` with no oversampling (about a second of encoding each).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from castwork.serve import ensure_redis
from tests.ad_helpers import kill_group, photo_bytes, wait_for, worker_env, worker_process
from tests.conftest import ON_CI, _free_port
from tests.mounts import tmpfs
from workers.api import create_app
from workers.broker import make_broker
from workers.jobs import Upload, submit
from workers.settings import Settings, load_settings
from workers.store import TERMINAL, JobRecord, JobStore

CHEAP_JOB = {
    "template": "sale",
    "formats": ["1:1"],
    "captions": False,
    "narration": False,
    "music": False,
}
# The smallest encode the settings allow: each render takes about a second here.
FAST_RENDER = {"CASTWORK_MEDIA__PRESET": "ultrafast", "CASTWORK_MEDIA__OVERSAMPLE": "1"}


def _counting_ffmpeg(tmp_path: Path, *, then: str = ":") -> tuple[dict[str, str], Path]:
    """Env for a worker whose ffmpeg logs every render's temporary output, and that log.
    ``then``: shell run after logging a render (e.g. to kill the worker instead)."""
    real = shutil.which("ffmpeg")
    if real is None:
        pytest.skip("ffmpeg is not installed")
    bin_dir, log = tmp_path / "bin", tmp_path / "renders.log"
    bin_dir.mkdir()
    log.touch()
    wrapper = bin_dir / "ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in */out/.ad-*.part.mp4) '
        f'echo "$a" >> {shlex.quote(str(log))}; {then};; esac; done\n'
        f'exec {shlex.quote(real)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **FAST_RENDER}, log


def _renders(log: Path, job_id: str) -> int:
    """ffmpeg renders started for ``job_id`` (its id is a folder in the output path)."""
    return sum(1 for line in log.read_text().splitlines() if f"/{job_id}/out/" in line)


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def _hidden(folder: Path) -> list[str]:
    """Temporary files (``.name.part``, ``.name.tmp``) left in ``folder``."""
    return sorted(p.name for p in folder.rglob(".*")) if folder.exists() else []


# --- Redis restarted mid-queue ------------------------------------------------------------

# Longer than redis-py's own reconnect retries (10 tries, jittered backoff capped at 1 s:
# at most about 4 s), so the outage really reaches the worker's code instead of being
# absorbed by a retry inside one command.
OUTAGE_S = 6.0
# appendfsync everysec: Redis write()s each command to the append-only file before it
# replies, and fsyncs once a second; if a background fsync is slow it may hold the write
# back for up to 2 s. A killed *process* loses nothing already written (the kernel has it;
# fsync only matters when the machine itself goes down), so SIGKILL is safe for what was
# acknowledged. Waiting 2 s after the last submission before the kill makes that hold even
# on a disk slow enough to postpone writes: not a source of flakiness.
AOF_SETTLE_S = 2.1


def _post_job(client: TestClient, headline: str) -> str:
    photo = photo_bytes("coffee", 600)
    data = {**CHEAP_JOB, "headline": headline, "formats": "1:1"}
    data = {k: str(v).lower() if isinstance(v, bool) else v for k, v in data.items()}
    resp = client.post("/v1/jobs", data=data, files=[("images", ("beans.jpg", photo))])
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def _queue_leftovers(url: str) -> dict[str, int]:
    """Messages still in the broker: queued, delayed, dead-lettered, or their bodies."""
    client = redis.Redis.from_url(url)
    try:
        ns = "castwork-dramatiq:castwork-ads"
        counts = {
            "queued": client.llen(ns),
            "delayed": client.llen(f"{ns}.DQ"),
            "dead": client.zcard(f"{ns}.XQ"),
            "bodies": client.hlen(f"{ns}.msgs") + client.hlen(f"{ns}.DQ.msgs"),
        }
        acks = list(client.scan_iter("castwork-dramatiq:__acks__.*"))
        counts["unacked"] = sum(client.scard(key) for key in acks)
        return counts
    finally:
        client.close()


class OwnRedis:
    """A redis-server of the test's own on a free loopback port, persisted exactly like the
    one ``castwork serve`` manages (same function, same append-only file settings), with
    its files under ``data_dir/redis``: stopped and started again from the same files."""

    def __init__(self, data_dir: Path) -> None:
        if shutil.which("redis-server") is None:
            if ON_CI:
                pytest.fail("redis-server is not installed (./setup.sh installs it)")
            pytest.skip("redis-server is not installed")
        self._settings = load_settings(data_dir=data_dir)
        self._port = _free_port()
        self.managed = ensure_redis(self._settings, port=self._port)
        assert self.managed.process is not None  # ours, not one that happened to answer
        self.url = self.managed.url

    def stop(self, how: str) -> None:
        process = self.managed.process
        assert process is not None
        if how == "sigkill":
            process.send_signal(signal.SIGKILL)
        else:
            # SHUTDOWN: Redis writes and fsyncs the append-only file, then exits.
            client = redis.Redis.from_url(self.url)
            try:
                client.shutdown()
            finally:
                client.close()
        process.wait(timeout=20)

    def start(self) -> None:
        """Start again from the same directory: Redis replays the append-only file."""
        self.managed = ensure_redis(self._settings, port=self._port)
        assert self.managed.process is not None and self.managed.url == self.url

    def close(self) -> None:
        self.managed.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    own = OwnRedis(tmp_path / "data")
    try:
        yield own
    finally:
        own.close()


def _delayed_held(url: str) -> int:
    """Delayed messages (retries in their backoff) a worker has fetched and holds."""
    client = redis.Redis.from_url(url)
    try:
        keys = client.scan_iter("castwork-dramatiq:__acks__.*.castwork-ads.DQ")
        return sum(client.scard(key) for key in keys)
    finally:
        client.close()


def _fault(what: str) -> pytest.MarkDecorator:
    return pytest.mark.reliability("fault", what)


@pytest.mark.parametrize(
    ("how", "worker"),
    [
        pytest.param(
            "shutdown",
            "across",
            marks=_fault("Redis shut down and restarted mid-queue (append-only file)"),
        ),
        pytest.param(
            "sigkill",
            "across",
            marks=_fault("Redis SIGKILLed and restarted mid-queue (append-only file)"),
        ),
        pytest.param(
            "sigkill",
            "after",
            marks=_fault("Redis and the worker SIGKILLed mid-queue, both started again"),
        ),
    ],
)
def test_redis_restarted_mid_queue_every_job_done_once(
    how: str,
    worker: str,
    own_redis: OwnRedis,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """``across``: one worker runs through the outage. ``after``: the worker is killed too,
    mid-render, while Redis is down, and a new one starts once Redis is back (a machine
    restart): its predecessor's messages come back from the append-only file's ack sets."""
    url = own_redis.url
    jobs_dir = tmp_path / "jobs"
    settings = load_settings(broker={"url": url}, jobs={"dir": jobs_dir})
    store = JobStore.from_url(url)
    broker = make_broker(settings)
    client = TestClient(
        create_app(settings, store=store, broker=broker),
        base_url="http://127.0.0.1",
        headers={"X-Castwork-CSRF": "1"},
    )
    env, render_log = _counting_ffmpeg(tmp_path)
    env = worker_env(url, jobs_dir, **env)
    log = tmp_path / "worker.log"
    try:
        # Two: one renders when Redis goes, the other waits in the queue.
        ids = [_post_job(client, f"Fresh beans {n}") for n in range(2)]
        settle = time.monotonic() + AOF_SETTLE_S
        with ExitStack() as workers:
            first = workers.enter_context(worker_process(env, threads=1, log=log))
            if how == "sigkill":
                time.sleep(max(0.0, settle - time.monotonic()))  # the worker starts meanwhile
            # Mid-queue: ffmpeg renders the first job (one worker thread), the other waits
            # (its narrate stage ran first, FIFO; its render is queued behind it).
            wait_for(
                lambda: _renders(render_log, ids[0]) == 1, 60, "the first render", every_s=0.02
            )
            assert not any(store.get(i).status in TERMINAL for i in ids)
            own_redis.stop(how)
            down = time.monotonic()
            if worker == "after":
                kill_group(first, signal.SIGKILL)
                first.wait(timeout=10)
            # The API answers while its store is down: 503 with Retry-After, not a 500.
            resp = client.get(f"/v1/jobs/{ids[0]}")
            assert resp.status_code == 503 and resp.headers["Retry-After"], resp.text
            time.sleep(max(0.0, down + OUTAGE_S - time.monotonic()))
            own_redis.start()
            if worker == "after":
                workers.enter_context(worker_process(env, threads=1, log=log))
            # The same API (same app, same pools) takes a new job once Redis is back.
            ids.append(_post_job(client, "Fresh beans after the restart"))
            try:
                wait_for(
                    lambda: all(store.get(i).status in TERMINAL for i in ids), 120, "every job"
                )
            except AssertionError as exc:
                states = {i: (store.get(i).status, store.get(i).stage) for i in ids}
                raise AssertionError(f"{exc}: {states}\n{_tail(log)}") from None
        records = {i: store.get(i) for i in ids}
        leftovers = _queue_leftovers(url)
        listed = [r.id for r in store.list("local", limit=100)]
    finally:
        store.r.close()
        broker.close()
    renders = {i: _renders(render_log, i) for i in ids}
    # Rendered once each; only a render killed with its worker is rendered again.
    expected = {i: 2 if worker == "after" and i == ids[0] else 1 for i in ids}
    record_property("jobs", len(ids))
    record_property("outage_s", OUTAGE_S)
    record_property("renders", sum(renders.values()))
    assert sorted(listed) == sorted(ids)  # one record per submission, none lost or doubled
    for record in records.values():
        _check_done_once(jobs_dir, record, log)
    assert leftovers == dict.fromkeys(leftovers, 0), leftovers  # nothing left to run again
    assert renders == expected, f"renders per job: {renders}\n{_tail(log)}"
    record_property("lost", 0)
    record_property("duplicated", 0)


def _check_done_once(jobs_dir: Path, record: JobRecord, log: Path) -> None:
    """Done, with one video per format and no temporary file beside them."""
    assert record.status == "done", f"{record.error}\n{_tail(log)}"
    assert record.manifest is not None
    out = jobs_dir / record.merchant / record.id / "out"
    videos = sorted(p.name for p in out.glob("ad-*.mp4"))
    assert videos == [o.video for o in record.manifest.outputs]  # one per format
    assert _hidden(out) == []


# --- Redis restarted while a retry waits ----------------------------------------------------


@pytest.mark.reliability(
    "fault", "Redis SIGKILLed and restarted while a job's retry waits (disk full, then freed)"
)
def test_retry_waiting_in_the_worker_survives_a_redis_restart(
    own_redis: OwnRedis, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """A retry waiting out its backoff is a delayed message held in the worker's memory,
    its id in the worker's ack set in Redis. dramatiq drops that memory when Redis goes
    away, and Redis never hands the message out again while that worker lives: the job
    would stay "running" for good (workers.broker.DurableRedisBroker puts it back)."""
    settings = load_settings(broker={"url": own_redis.url}, jobs={"dir": tmp_path / "jobs"})
    env, render_log = _counting_ffmpeg(tmp_path)
    # A backoff (3 to 6 s with dramatiq's jitter) that outlasts the moment Redis stops.
    slow_retry = {"CASTWORK_JOBS__MIN_BACKOFF_MS": "6000", "CASTWORK_JOBS__MAX_BACKOFF_MS": "6000"}
    env = worker_env(own_redis.url, settings.jobs_dir, **env, **slow_retry)
    store = JobStore.from_url(own_redis.url)
    log = tmp_path / "worker.log"
    try:
        job, job_dir = _submit_cheap(settings, store, "Full, then freed")
        with worker_process(env, threads=1, log=log):
            with tmpfs(job_dir / "out", "size=200k"):
                wait_for(
                    lambda: _delayed_held(own_redis.url) == 1, 60, "the retry, held by the worker"
                )
                assert _renders(render_log, job) == 1 and store.get(job).status == "running"
                own_redis.stop("sigkill")
            # Unmounted: the disk has room again, while Redis is still down.
            time.sleep(OUTAGE_S)
            own_redis.start()
            try:
                wait_for(lambda: store.get(job).status in TERMINAL, 60, "the job")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {store.get(job)}\n{_tail(log)}") from None
        record = store.get(job)
        leftovers = _queue_leftovers(own_redis.url)
    finally:
        store.r.close()
    _check_done_once(settings.jobs_dir, record, log)
    assert leftovers == dict.fromkeys(leftovers, 0), leftovers
    assert _renders(render_log, job) == 2  # the attempt that met the full disk, and the retry
    record_property("jobs", 1)
    record_property("lost", 0)
    record_property("outage_s", OUTAGE_S)


# --- Output disk full / read-only ----------------------------------------------------------
# A job's files live in <jobs.dir>/<merchant>/<job id>/ (setting jobs.dir, default
# <data_dir>/jobs): uploads/, inputs/, work/ (layer PNGs, JSON) and out/ (the MP4s). The
# tiny mounts go over one job's out/ (and one job's work/layers/) rather than over jobs.dir,
# so the uploads fit and the fault meets the worker, not the API; the job beside them, on
# the ordinary disk, is the one the worker must go on to.


def _storage_fault_env(redis_url: str, tmp_path: Path) -> tuple[Settings, dict[str, str], Path]:
    settings = load_settings(broker={"url": redis_url}, jobs={"dir": tmp_path / "jobs"})
    env, render_log = _counting_ffmpeg(tmp_path)
    return settings, worker_env(redis_url, settings.jobs_dir, **env), render_log


def _submit_cheap(settings: Settings, store: JobStore, headline: str) -> tuple[str, Path]:
    """A cheap job, queued; its id and folder."""
    photo = Upload("beans.jpg", photo_bytes("coffee", 600))
    broker = make_broker(settings)
    try:
        record, _ = submit(
            settings, store, broker, "acme", {**CHEAP_JOB, "headline": headline}, [photo]
        )
    finally:
        broker.close()
    return record.id, settings.jobs_dir / "acme" / record.id


@pytest.mark.reliability("fault", "Output disk full (a 200 KiB tmpfs for the job's files)")
def test_disk_full_fails_the_job_after_its_retries_and_the_worker_goes_on(
    redis_url: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    settings, env, render_log = _storage_fault_env(redis_url, tmp_path)
    store = JobStore.from_url(redis_url)
    log = tmp_path / "worker.log"
    try:
        full, full_dir = _submit_cheap(settings, store, "Full disk")  # ffmpeg hits ENOSPC
        layers, layers_dir = _submit_cheap(settings, store, "Full layers")  # Pillow does
        ok, _ = _submit_cheap(settings, store, "Plenty of room")
        ids = (full, layers, ok)
        # 200 KiB: a second of video does not fit. 4 KiB (one page): no text layer fits.
        with (
            tmpfs(full_dir / "out", "size=200k"),
            tmpfs(layers_dir / "work" / "layers", "size=4k"),
            worker_process(env, threads=1, log=log),
        ):
            try:
                wait_for(lambda: all(store.get(i).status in TERMINAL for i in ids), 90, "jobs")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_tail(log)}") from None
            # Checked while still mounted: what is left on the full disks.
            left_out = sorted(p.name for p in (full_dir / "out").iterdir())
            left_layers = _hidden(layers_dir / "work" / "layers")
        records = {i: store.get(i) for i in ids}
    finally:
        store.r.close()
    attempts = settings.jobs.max_retries + 1
    for job_id in (full, layers):
        failed = records[job_id]
        assert failed.status == "failed" and failed.error_code == "disk_full", failed.error
        assert "No space left on device (ENOSPC)" in failed.error
        # Transient, so retried, but within the retry budget: then failed, with the count.
        assert f"(failed {attempts} times)" in failed.error
    assert records[full].error.startswith("render 1:1: ffmpeg cannot write its output")
    assert _renders(render_log, full) == attempts  # each attempt rendered once, no more
    assert left_out == []  # no partial MP4, no temporary file
    assert left_layers == []  # no half-written PNG either
    _check_done_once(settings.jobs_dir, records[ok], log)  # the worker went on
    record_property("jobs", len(ids))
    record_property("failed_with_reason", 2)
    record_property("attempts", attempts)


@pytest.mark.reliability("fault", "Output directory read-only (a read-only mount)")
def test_read_only_output_fails_the_job_at_once_and_the_worker_goes_on(
    redis_url: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    settings, env, render_log = _storage_fault_env(redis_url, tmp_path)
    store = JobStore.from_url(redis_url)
    log = tmp_path / "worker.log"
    try:
        ro, ro_dir = _submit_cheap(settings, store, "Read-only")
        ok, _ = _submit_cheap(settings, store, "Writable")
        # Root writes through chmod 0500; not through a read-only mount.
        with tmpfs(ro_dir / "out", "ro"), worker_process(env, threads=1, log=log):
            try:
                wait_for(
                    lambda: {store.get(ro).status, store.get(ok).status} <= TERMINAL, 60, "jobs"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_tail(log)}") from None
            left = sorted(p.name for p in (ro_dir / "out").iterdir())
        failed, done = store.get(ro), store.get(ok)
    finally:
        store.r.close()
    assert failed.status == "failed" and failed.error_code == "storage_unwritable", failed.error
    assert (
        failed.error == "render 1:1: ffmpeg cannot write its output: Read-only file system (EROFS)"
    )
    assert _renders(render_log, ro) == 1  # permanent: not retried
    assert left == []
    _check_done_once(settings.jobs_dir, done, log)  # the worker went on
    record_property("jobs", 2)
    record_property("failed_with_reason", 1)
    record_property("attempts", 1)
