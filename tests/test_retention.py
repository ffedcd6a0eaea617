"""Retention: what a pass decides (no I/O), and passes over real Redis records and real job
folders: expired jobs go (disk back to its baseline), fresh ones stay, uploads go once the
inputs exist, a merchant over its quota loses its oldest finished jobs, stranded jobs fail
(and free their merchant's active slots), and a worker process runs a pass by itself."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Broker

from base.errors import CapacityError
from castwork.cli import main
from media.folder import JobPaths
from tests.ad_helpers import photo_bytes, wait_for, worker_env, worker_process
from workers.broker import make_broker
from workers.jobs import Upload, submit
from workers.retention import (
    Decision,
    JobFiles,
    Policy,
    QuotaExceeded,
    Reaper,
    plan,
)
from workers.settings import Settings, load_settings
from workers.storage.local import job_root
from workers.store import JobNotFound, JobStore

DAY = 86_400.0
NOW = 1_800_000_000.0
POLICY = Policy(
    keep_done_s=30 * DAY, keep_failed_s=7 * DAY, max_merchant_bytes=1000, stranded_after_s=DAY
)


def _job(job_id: str, status: str, age_days: float, **sizes: Any) -> JobFiles:
    at = NOW - age_days * DAY
    return JobFiles("acme", job_id, status, created=at, updated=at, **sizes)


def _what(decisions: list[Decision]) -> list[tuple[str, str, str]]:
    return [(d.job.id, d.action.value, d.why) for d in decisions]


# --- What a pass decides ----------------------------------------------------------------


def test_plan_deletes_expired_jobs_and_keeps_fresh_and_active_ones() -> None:
    jobs = [
        _job("done-old", "done", 31),
        _job("done-new", "done", 29),
        _job("failed-old", "failed", 8),
        _job("cancelled-old", "cancelled", 8),
        _job("failed-new", "failed", 6),
        _job("running", "running", 0.5),
        _job("queued", "queued", 0.1),
    ]
    assert _what(plan(jobs, POLICY, NOW)) == [
        ("done-old", "delete", "expired"),
        ("failed-old", "delete", "expired"),
        ("cancelled-old", "delete", "expired"),
    ]


def test_plan_drops_uploads_once_the_inputs_exist() -> None:
    jobs = [
        _job("prepared", "running", 0, bytes=300, upload_bytes=200, inputs_ready=True),
        _job("preparing", "running", 0, bytes=300, upload_bytes=200),
        _job("done", "done", 1, bytes=300, upload_bytes=200),
        _job("bad-photo", "failed", 1, bytes=300, upload_bytes=200),  # evidence, until it expires
    ]
    decisions = plan(jobs, POLICY, NOW)
    assert _what(decisions) == [
        ("prepared", "drop_uploads", "inputs_ready"),
        ("done", "drop_uploads", "inputs_ready"),
    ]
    assert [d.frees for d in decisions] == [200, 200]


def test_plan_over_quota_deletes_the_oldest_finished_jobs_first() -> None:
    jobs = [
        _job("active-old", "running", 0.9, bytes=400),  # never chosen: it is still working
        _job("done-3", "done", 3, bytes=300),
        _job("failed-2", "failed", 2, bytes=300),
        _job("done-1", "done", 1, bytes=300),
    ]
    # 1300 bytes for 1000 allowed: the oldest finished job (300) is enough.
    assert _what(plan(jobs, POLICY, NOW)) == [("done-3", "delete", "quota")]
    # Uploads dropped in the same pass count as freed.
    lighter = [*jobs[:3], _job("done-1", "done", 1, bytes=300, upload_bytes=300)]
    assert _what(plan(lighter, POLICY, NOW)) == [("done-1", "drop_uploads", "inputs_ready")]


def test_plan_fails_jobs_queued_or_running_past_their_deadline() -> None:
    jobs = [_job("stuck", "running", 1.1), _job("lost", "queued", 2), _job("slow", "running", 0.9)]
    assert _what(plan(jobs, POLICY, NOW)) == [
        ("stuck", "fail_stranded", "stranded"),
        ("lost", "fail_stranded", "stranded"),
    ]


def test_plan_deletes_orphan_folders_only_after_an_hour() -> None:
    # A folder with no record: the API saves the uploads before it creates the record.
    young = JobFiles("acme", "young", "", NOW - 600, NOW - 600, bytes=10)
    old = JobFiles("acme", "old", "", NOW - 7200, NOW - 7200, bytes=10)
    assert _what(plan([young, old], POLICY, NOW)) == [("old", "delete", "orphan")]


def test_stranded_deadline_covers_every_stage_with_every_retry() -> None:
    jobs = load_settings().jobs
    policy = Policy.from_settings(jobs)
    # narrate, three renders, finalize; each with all its attempts at the time limit.
    assert policy.stranded_after_s > 5 * (jobs.max_retries + 1) * jobs.time_limit_s
    assert policy.keep_done_s == jobs.keep_days * DAY
    assert policy.max_merchant_bytes == jobs.max_merchant_mb << 20


# --- Passes over real records and folders -----------------------------------------------


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    store = JobStore.from_url(redis_url)
    store.r.flushdb()
    yield store
    store.r.close()


def _settings(tmp_path: Path, redis_url: str, **jobs: object) -> Settings:
    return load_settings(broker={"url": redis_url}, jobs={"dir": tmp_path / "jobs", **jobs})


def _disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _make_job(
    settings: Settings,
    store: JobStore,
    status: str,
    *,
    age_days: float = 0.0,
    merchant: str = "acme",
    prepared: bool = True,
    kb: int = 256,
) -> str:
    """A job record in ``status``, finished (or created) ``age_days`` ago, with a folder of
    real files: uploads, inputs, work files, outputs of ``kb`` KiB each."""
    job_id = store.new_id()
    store.create(job_id, merchant, template="sale", formats=["1:1"], fields={})
    paths = job_root(settings, merchant, job_id)
    paths.make()
    blob = os.urandom(kb << 10)
    (paths.uploads / "00-beans.jpg").write_bytes(blob)
    (paths.work / "request.json").write_text("{}")
    if prepared:
        (paths.inputs / "beans.jpg").write_bytes(blob)
        paths.spec_file.write_text("{}")
    if status == "done":
        (paths.out / "ad-1x1.mp4").write_bytes(blob)
        assert store.finish(
            job_id,
            {
                "outputs": [{"format": "1:1", "video": "ad-1x1.mp4", "thumbnail": "t.jpg"}],
                "preview": "preview.mp4",
            },
        )
    elif status == "failed":
        assert store.fail(job_id, "bad_input", "narrate: no")
    elif status == "cancelled":
        assert store.cancel(job_id)
    elif status == "running":
        assert store.start_stage(job_id, "narrate")
    at = time.time() - age_days * DAY
    store.r.hset(f"castwork:job:{job_id}", mapping={"created": repr(at), "updated": repr(at)})
    return job_id


def _gone(store: JobStore, job_id: str, merchant: str = "acme") -> bool:
    try:
        store.get(job_id)
    except JobNotFound:
        return job_id not in store.job_ids(merchant)
    return False


def test_pass_deletes_expired_jobs_drops_uploads_and_keeps_fresh_jobs(
    redis_url: str, tmp_path: Path, store: JobStore
) -> None:
    settings = _settings(tmp_path, redis_url, keep_days=30, keep_failed_days=7)
    fresh = {
        "done": _make_job(settings, store, "done", age_days=29),
        # Failed in prepare (a bad photo): its uploads are the evidence, kept until it expires.
        "failed": _make_job(settings, store, "failed", age_days=6, prepared=False),
        "running": _make_job(settings, store, "running"),
        "queued": _make_job(settings, store, "queued", prepared=False),
    }
    # The pass drops the uploads of the fresh jobs whose inputs exist: not in the baseline.
    dropped = [job_root(settings, "acme", fresh[s]).uploads for s in ("done", "running")]
    baseline = _disk(settings.jobs_dir) - sum(_disk(d) for d in dropped)
    expired = [
        _make_job(settings, store, "done", age_days=31),
        _make_job(settings, store, "failed", age_days=8),
        _make_job(settings, store, "cancelled", age_days=8, prepared=False),
    ]
    report = Reaper(settings, store).run()
    assert dict(report.deleted) == {"expired": 3} and report.errors == 0
    assert _disk(settings.jobs_dir) == baseline
    assert all(_gone(store, job_id) for job_id in expired)
    assert not any(job_root(settings, "acme", j).root.exists() for j in expired)
    assert {store.get(j).status for j in fresh.values()} == set(fresh)
    # Uploads went where the inputs exist (done, running); the rest kept every file.
    assert not any(d.exists() for d in dropped)
    assert any(job_root(settings, "acme", fresh["queued"]).uploads.iterdir())
    assert any(job_root(settings, "acme", fresh["failed"]).uploads.iterdir())
    assert Reaper(settings, store).run().deleted == {}  # nothing more to do


def test_pass_fails_stranded_jobs_and_frees_their_slots(
    redis_url: str, tmp_path: Path, store: JobStore, broker: Broker
) -> None:
    """A job "running" for good (its worker's interrupt lost) and one "queued" with no
    message (the API died between creating it and queueing it) held the merchant's only
    active slot: 429 for good. Past the deadline they fail, with the reason."""
    settings = load_settings(
        broker={"url": redis_url}, jobs={"dir": tmp_path / "jobs"}, api={"max_active_jobs": 2}
    )
    policy = Policy.from_settings(settings.jobs)
    late = policy.stranded_after_s / DAY + 0.01
    stuck = _make_job(settings, store, "running", age_days=late)
    lost = _make_job(settings, store, "queued", age_days=late, prepared=False)
    fields = {"headline": "Fresh beans", "formats": ["1:1"]}
    photo = [Upload("beans.jpg", photo_bytes("coffee", 600))]
    with pytest.raises(CapacityError):
        submit(settings, store, broker, "acme", fields, photo)
    assert Reaper(settings, store).run().stranded == 2
    for job_id in (stuck, lost):
        record = store.get(job_id)
        assert (record.status, record.error_code) == ("failed", "stranded")
        assert record.error.startswith("stranded: still ")
    _, created = submit(settings, store, broker, "acme", fields, photo)
    assert created


def test_submission_over_quota_makes_room_or_is_refused(
    redis_url: str, tmp_path: Path, store: JobStore, broker: Broker
) -> None:
    settings = _settings(tmp_path, redis_url, max_merchant_mb=1)
    old = _make_job(settings, store, "done", age_days=2, kb=200)  # 600 KiB in all
    newer = _make_job(settings, store, "failed", age_days=1, kb=100)  # 200 KiB
    fields = {"headline": "Fresh beans", "formats": ["1:1"]}
    photo = [Upload("beans.jpg", os.urandom(300 << 10))]
    # 800 KiB + 300 KiB > 1 MiB: the oldest finished job goes, the newer one fits beside.
    record, created = submit(settings, store, broker, "acme", fields, photo)
    assert created and _gone(store, old) and store.get(newer).status == "failed"
    # Jobs still queued or running take the room (300 + 600 KiB): refused, and nothing is
    # deleted for a job that would not fit anyway.
    _make_job(settings, store, "running", kb=300)
    with pytest.raises(QuotaExceeded, match="wait for one to finish"):
        submit(settings, store, broker, "acme", fields, photo)
    assert store.get(record.id).status == "queued"  # never touched
    assert store.get(newer).status == "failed"
    # Another merchant's storage is its own.
    _, created = submit(settings, store, broker, "globex", fields, photo)
    assert created


def test_orphan_folder_goes_after_an_hour_and_a_lost_list_entry_is_dropped(
    redis_url: str, tmp_path: Path, store: JobStore
) -> None:
    settings = _settings(tmp_path, redis_url)
    young, old = JobPaths(settings.jobs_dir / "acme" / store.new_id()), None
    young.make()
    (young.uploads / "00-a.jpg").write_bytes(b"x" * 1000)
    old_id = store.new_id()
    old = JobPaths(settings.jobs_dir / "acme" / old_id)
    old.make()
    (old.uploads / "00-a.jpg").write_bytes(b"x" * 1000)
    two_hours_ago = time.time() - 7200
    os.utime(old.root, (two_hours_ago, two_hours_ago))
    # Not a job folder (name): never touched.
    (settings.jobs_dir / "acme" / "notes").mkdir()
    store.r.zadd("castwork:merchant:acme:jobs", {"0123456789abcdef0123": time.time()})
    report = Reaper(settings, store).run()
    assert dict(report.deleted) == {"orphan": 1}
    assert young.root.exists() and not old.root.exists()
    assert (settings.jobs_dir / "acme" / "notes").exists()
    assert store.job_ids("acme") == []


def test_castwork_jobs_reap_runs_one_pass(
    redis_url: str,
    tmp_path: Path,
    store: JobStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings(tmp_path, redis_url)
    expired = _make_job(settings, store, "failed", age_days=8, prepared=False, kb=1024)
    monkeypatch.setenv("CASTWORK_BROKER__URL", redis_url)
    monkeypatch.setenv("CASTWORK_JOBS__DIR", str(settings.jobs_dir))
    assert main(["jobs", "reap"]) == 0
    assert capsys.readouterr().out.startswith("1 jobs deleted (1 expired), 0 uploads dropped")
    assert _gone(store, expired)


@pytest.mark.reliability(
    "fault", "Expired jobs (real folders and records) removed by the worker's own retention pass"
)
def test_worker_process_runs_retention_and_disk_returns_to_baseline(
    redis_url: str,
    tmp_path: Path,
    store: JobStore,
    record_property: Callable[[str, object], None],
) -> None:
    settings = _settings(tmp_path, redis_url)
    fresh = _make_job(settings, store, "done", age_days=1)
    _make_job(settings, store, "done", age_days=0)  # its uploads go: the baseline is without
    Reaper(settings, store).run()
    baseline = _disk(settings.jobs_dir)
    expired = [
        _make_job(settings, store, status, age_days=40, kb=1024)
        for status in ("done", "done", "failed", "cancelled")
    ]
    freed = _disk(settings.jobs_dir) - baseline
    env = worker_env(redis_url, settings.jobs_dir, CASTWORK_JOBS__REAP_EVERY_S="1")
    with worker_process(env, threads=1, log=tmp_path / "worker.log"):
        wait_for(lambda: all(_gone(store, j) for j in expired), 60, "the retention pass")
    assert _disk(settings.jobs_dir) == baseline
    assert store.get(fresh).status == "done"
    assert (job_root(settings, "acme", fresh).out / "ad-1x1.mp4").exists()
    record_property("jobs", len(expired))
    record_property("freed_mb", round(freed / (1 << 20), 1))


@pytest.fixture
def broker(redis_url: str) -> Iterator[Broker]:
    broker = make_broker(load_settings(broker={"url": redis_url}))
    yield broker
    broker.close()
