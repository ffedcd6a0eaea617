"""Ad jobs through real Redis, real dramatiq workers, real TTS and ffmpeg.

The redelivery test kills a whole worker (process group, SIGKILL) in the middle of a render
and checks that a second worker completes the job exactly once, with valid files only."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dramatiq import Broker

from media import ffmpeg
from tests.ad_helpers import kill_group, photo_bytes, wait_for, worker_env, worker_process
from workers.broker import make_broker
from workers.jobs import Upload, submit
from workers.settings import Settings, load_settings
from workers.store import JobStore

pytestmark = pytest.mark.models


def _settings(redis_url: str, jobs_dir: Path) -> Settings:
    return load_settings(broker={"url": redis_url}, jobs={"dir": jobs_dir})


# Closed at the end: redis-py's connections sit in reference cycles, and one the garbage
# collector happens to finalize while pytest watches is an "unclosed socket" error.
@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    store = JobStore.from_url(redis_url)
    yield store
    store.r.close()


@pytest.fixture
def broker(redis_url: str) -> Iterator[Broker]:
    broker = make_broker(load_settings(broker={"url": redis_url}))
    yield broker
    broker.close()


@pytest.mark.reliability("fault", "Worker SIGKILLed mid-render (process group)")
def test_worker_killed_mid_render_job_completes_once(
    redis_url: str,
    tmp_path: Path,
    store: JobStore,
    broker: Broker,
    record_property: Callable[[str, object], None],
) -> None:
    jobs_dir = tmp_path / "jobs"
    settings = _settings(redis_url, jobs_dir)
    photos = [Upload(f"{n}.jpg", photo_bytes(n)) for n in ("coffee", "chelsea")]
    record, created = submit(
        settings,
        store,
        broker,
        "acme",
        {"template": "sale", "headline": "Weekend sale", "price": "$12", "cta": "Buy now",
         "formats": ["1:1"], "captions": True},
        photos,
    )  # fmt: skip
    assert created
    env = worker_env(redis_url, jobs_dir)
    with worker_process(env, threads=1) as first:
        # Kill the worker once a render is well under way (ffmpeg writing its temp file).
        wait_for(
            lambda: any(
                stage.startswith("render") and 0.2 < share < 0.9
                for stage, share in store.get(record.id).shares.items()
            ),
            180,
            "a render to be under way",
            every_s=0.05,
        )
        kill_group(first, signal.SIGKILL)
        first.wait(timeout=10)
    out = jobs_dir / "acme" / record.id / "out"
    assert store.get(record.id).status == "running"  # nobody finished it
    with worker_process(env, threads=1):
        wait_for(lambda: store.get(record.id).status in {"done", "failed"}, 240, "the job")
    done = store.get(record.id)
    assert done.status == "done", done.error
    assert done.manifest is not None
    videos = sorted(p.name for p in out.glob("*.mp4") if p.name != "preview.mp4")
    assert videos == sorted(o.video for o in done.manifest.outputs)  # one file per format
    assert len(videos) == 1
    assert not list(out.glob(".*"))  # no orphaned temporary file left behind
    for item in done.manifest.outputs:
        probe = ffmpeg.probe(out / item.video)
        assert probe.video_codec == "h264" and probe.audio_codec == "aac"
        assert probe.fps == pytest.approx(30.0)
        assert probe.duration == pytest.approx(done.manifest.duration_s, abs=0.1)
    record_property("jobs", 1)
    record_property("lost", 0)
    record_property("duplicated", 0)


@pytest.mark.reliability("input", "Truncated photo (a JPEG header, then nothing)")
def test_bad_photo_fails_its_job_and_the_worker_goes_on(
    redis_url: str,
    tmp_path: Path,
    store: JobStore,
    broker: Broker,
    record_property: Callable[[str, object], None],
) -> None:
    jobs_dir = tmp_path / "jobs"
    settings = _settings(redis_url, jobs_dir)
    good = photo_bytes("coffee")
    truncated = good[: len(good) // 3]  # a real JPEG header, then nothing: passes a type sniff
    fields = {"headline": "Fresh beans", "formats": ["1:1"], "narration": False, "music": False}
    bad, _ = submit(settings, store, broker, "acme", fields, [Upload("beans.jpg", truncated)])
    ok, _ = submit(settings, store, broker, "acme", fields, [Upload("beans.jpg", good)])
    with worker_process(worker_env(redis_url, jobs_dir), threads=1):
        wait_for(
            lambda: {store.get(bad.id).status, store.get(ok.id).status} <= {"done", "failed"},
            180,
            "both jobs",
        )
    failed = store.get(bad.id)
    assert failed.status == "failed"
    assert failed.error_code == "bad_input"
    assert "beans.jpg" in failed.error and "truncated or corrupt" in failed.error
    assert store.get(ok.id).status == "done"  # the same worker went on to the next job
    assert not list((jobs_dir / "acme" / bad.id / "out").glob("*.mp4"))
    record_property("tried", 1)
    record_property("refused", 1)
