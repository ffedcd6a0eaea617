"""Every job ends: a stage past its time limit fails its job with the reason (and frees the
merchant's active slot), a stage that kills its worker every time is failed after its
starts and never delivered again, a worker stopping hands its job back; and what a job shows
the merchant stays theirs: manifest names are plain files, errors carry no server path,
logos meet the configured image limits; ffmpeg's timeout is below the stage's time limit."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Shutdown
from PIL import Image

from base.errors import CapacityError, ConfigError
from base.settings import with_overrides
from media.errors import InputError
from media.job import JobSpec
from media.pipeline import NarrationEngines, prepare
from tests.ad_helpers import kill_group, photo_bytes, wait_for, worker_env, worker_process
from tests.test_ad_faults import CHEAP_JOB, _counting_ffmpeg, _queue_leftovers, _tail
from voice.engines.contracts import Synthesizer, Transcriber
from voice.testing.fakes import FakeSynthesizer
from workers import actors
from workers.actors import Context, declare
from workers.broker import make_broker
from workers.jobs import Upload, outputs, submit
from workers.settings import load_settings
from workers.storage import open_storage
from workers.storage.local import job_root
from workers.store import TERMINAL, BadManifest, JobStore, without_paths

MANIFEST = {
    "outputs": [{"format": "1:1", "video": "ad-1x1-abc.mp4", "thumbnail": "thumb-1x1.jpg"}],
    "preview": "preview.mp4",
    "duration_s": 9.5,
}


@pytest.fixture
def store(redis_url: str) -> Iterator[JobStore]:
    store = JobStore.from_url(redis_url)
    store.r.flushdb()  # the session's Redis: no message or record of an earlier test
    yield store
    store.r.close()


def _job(store: JobStore, merchant: str = "acme") -> str:
    job_id = store.new_id()
    store.create(job_id, merchant, template="sale", formats=["1:1"], fields={})
    return job_id


# --- A stage past its time limit ----------------------------------------------------------


class SlowVoice(NarrationEngines):
    """A voice that takes 3 s a sentence: longer than the stage's 1 s time limit."""

    def voice(self, language: str) -> tuple[Synthesizer, Synthesizer | None]:
        return FakeSynthesizer(latency_s=3.0), None

    def aligner(self, language: str) -> Transcriber | None:
        return None


@pytest.mark.reliability(
    "fault", "A stage past its time limit (dramatiq's interrupt): job failed with the reason"
)
def test_stage_past_its_time_limit_fails_the_job_and_frees_its_slot(
    redis_url: str, tmp_path: Path, store: JobStore, record_property: Callable[[str, object], None]
) -> None:
    """dramatiq raises TimeLimitExceeded (a BaseException) in the worker thread: it went past
    ``except Exception``, the job stayed "running" for good and, counted as active, got its
    merchant 429 for every new job."""
    settings = load_settings(
        broker={"url": redis_url},
        jobs={
            "dir": tmp_path / "jobs",
            "time_limit_s": 1,
            "max_retries": 1,
            "min_backoff_ms": 100,
            "max_backoff_ms": 100,
        },
        media={"render_timeout_s": 0.5},
        api={"max_active_jobs": 1},
    )
    broker = make_broker(settings)
    declare(Context(settings, store, broker, SlowVoice(settings), open_storage(settings)))
    fields = {"headline": "Slow voice", "formats": ["1:1"], "music": False}
    photos = [Upload("beans.jpg", photo_bytes("coffee", 600))]
    record, _ = submit(settings, store, broker, "acme", fields, photos)
    broker.emit_after("process_boot")  # starts the time limit's clock, as a worker process does
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: store.get(record.id).status in TERMINAL, 60, "the job")
    finally:
        worker.stop()
    try:
        failed = store.get(record.id)
        assert (failed.status, failed.error_code) == ("failed", "time_limit")
        assert failed.error == "narrate: ran past its time limit of 1 s (failed 2 times)"
        # Acked after its last attempt: nothing dead-lettered, nothing left to run.
        leftovers = _queue_leftovers(redis_url)
        assert leftovers == dict.fromkeys(leftovers, 0), leftovers
        # The merchant's one active slot is free again.
        _, created = submit(settings, store, broker, "acme", fields, photos)
        assert created
        with pytest.raises(CapacityError):
            submit(settings, store, broker, "acme", fields, photos)
    finally:
        broker.close()
    record_property("attempts", 2)
    record_property("failed_with_reason", 1)


# --- A stage that kills its worker every time --------------------------------------------


def _killing_ffmpeg(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Env for a worker whose ffmpeg, asked to render a video, kills the worker process that
    started it (as the kernel's OOM killer would), and logs each such render."""
    return _counting_ffmpeg(tmp_path, then='kill -KILL "$PPID"; exit 1')


@pytest.mark.reliability(
    "fault", "A render that kills its worker each time (poison message): failed, never redelivered"
)
def test_stage_that_kills_its_worker_fails_after_its_starts(
    redis_url: str, tmp_path: Path, store: JobStore, record_property: Callable[[str, object], None]
) -> None:
    """A message whose worker dies is redelivered without counting as a retry: before the
    starts were counted, this job was rendered, and its worker killed, forever."""
    jobs_dir = tmp_path / "jobs"
    settings = load_settings(broker={"url": redis_url}, jobs={"dir": jobs_dir})
    broker = make_broker(settings)
    try:
        record, _ = submit(
            settings,
            store,
            broker,
            "acme",
            {**CHEAP_JOB, "headline": "Poison"},
            [Upload("beans.jpg", photo_bytes("coffee", 600))],
        )
    finally:
        broker.close()
    env, render_log = _killing_ffmpeg(tmp_path)
    env = worker_env(redis_url, jobs_dir, **env, CASTWORK_JOBS__MAX_RETRIES="1")
    log = tmp_path / "worker.log"
    workers = 0
    while store.get(record.id).status not in TERMINAL:
        assert workers < 5, f"still {store.get(record.id).status} after {workers} workers"
        workers += 1
        with worker_process(env, threads=1, log=log) as proc:
            try:
                wait_for(
                    lambda: proc.poll() is not None or store.get(record.id).status in TERMINAL,
                    90,
                    "the worker to die or the job to end",
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_tail(log)}") from None
            kill_group(proc, signal.SIGKILL)  # what is left of the group, if anything
    failed = store.get(record.id)
    renders = len(render_log.read_text().splitlines())
    assert (failed.status, failed.error_code) == ("failed", "worker_lost"), failed.error
    assert failed.error.startswith("render 1:1: started 2 times and never finished")
    assert renders == 2  # max_retries + 1 starts, each one killed its worker
    leftovers = _queue_leftovers(redis_url)
    assert leftovers == dict.fromkeys(leftovers, 0), leftovers  # acked: never delivered again
    record_property("starts", renders)
    record_property("failed_with_reason", 1)


def test_a_start_past_the_budget_fails_the_job_without_running_it(
    redis_url: str, tmp_path: Path, store: JobStore
) -> None:
    settings = load_settings(jobs={"dir": tmp_path, "max_retries": 2})
    ctx = Context(settings, store, StubBroker(), NarrationEngines(settings), open_storage(settings))
    job = _job(store)
    ran = []
    for _ in range(3):  # three starts (max_retries + 1), each killed before it ended
        assert store.count_start(job, "render 1:1") >= 1
    actors._guard(ctx, job, "render 1:1", lambda: ran.append(1))
    record = store.get(job)
    assert ran == [] and (record.status, record.error_code) == ("failed", "worker_lost")
    assert record.error.startswith("render 1:1: started 3 times and never finished")
    assert store.count_start(job, "render 1:1") == 0  # finished: nothing counted any more


def test_a_worker_stopping_mid_stage_hands_the_job_back(
    redis_url: str, tmp_path: Path, store: JobStore
) -> None:
    settings = load_settings(jobs={"dir": tmp_path})
    ctx = Context(settings, store, StubBroker(), NarrationEngines(settings), open_storage(settings))
    job = _job(store)

    def work() -> None:
        raise Shutdown()  # what dramatiq raises in a stopping worker's threads

    with pytest.raises(Shutdown):  # dramatiq sends the message again
        actors._guard(ctx, job, "narrate", work)
    assert store.get(job).status == "queued"


# --- Settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("render_timeout_s", [900, 1200])
def test_ffmpeg_timeout_must_be_below_the_stage_time_limit(render_timeout_s: float) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(media={"render_timeout_s": render_timeout_s}, jobs={"time_limit_s": 900})
    message = str(err.value)
    assert "media.render_timeout_s" in message and "jobs.time_limit_s" in message
    assert "CASTWORK_MEDIA__RENDER_TIMEOUT_S" in message
    with pytest.raises(ConfigError, match=r"jobs\.time_limit_s"):
        with_overrides(load_settings(), {"jobs.time_limit_s": 600})
    assert load_settings(jobs={"time_limit_s": 601}).media.render_timeout_s == 600


def test_environment_time_limits_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASTWORK_JOBS__TIME_LIMIT_S", "300")
    with pytest.raises(ConfigError, match=r"600 s must be below jobs\.time_limit_s"):
        load_settings()


# --- What the merchant sees ---------------------------------------------------------------


@pytest.mark.reliability("input", "A manifest in Redis naming ../ (an altered record): not served")
def test_manifest_names_are_plain_files_when_written_and_when_read(
    store: JobStore, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    job = _job(store)
    for bad in ("../../../../etc/passwd", "/etc/passwd", ".hidden.mp4", "out/ad.mp4", ""):
        tampered = {**MANIFEST, "preview": bad}
        with pytest.raises(BadManifest):
            store.finish(job, tampered)
    assert store.finish(job, MANIFEST)
    files = outputs(store.get(job))
    assert files == {
        "1x1.mp4": "out/ad-1x1-abc.mp4",
        "thumb-1x1.jpg": "out/thumb-1x1.jpg",
        "preview.mp4": "out/preview.mp4",
    }
    # The record altered in Redis after the fact: read back, nothing is served.
    tampered = {**MANIFEST, "outputs": [{**MANIFEST["outputs"][0], "video": "../../x.mp4"}]}  # type: ignore[dict-item]
    store.r.hset(f"castwork:job:{job}", "manifest", json.dumps(tampered))
    record = store.get(job)
    assert record.status == "done" and record.manifest is None
    assert outputs(record) == {}
    record_property("tried", 6)
    record_property("refused", 6)


def test_job_errors_carry_no_server_path(redis_url: str, tmp_path: Path, store: JobStore) -> None:
    settings = load_settings(jobs={"dir": tmp_path / "jobs", "max_retries": 0})
    ctx = Context(settings, store, StubBroker(), NarrationEngines(settings), open_storage(settings))
    job = _job(store)
    missing = job_root(settings, "acme", job).work / "narration.json"

    def work() -> None:
        missing.read_text()  # FileNotFoundError, naming the full path: unknown, retries used

    actors._guard(ctx, job, "render 1:1", work)
    record = store.get(job)
    assert record.error_code == "internal_error"
    assert record.error == (
        "render 1:1 failed 1 times: [Errno 2] No such file or directory: 'narration.json'"
    )
    assert str(tmp_path) not in record.error and job not in record.error


@pytest.mark.parametrize(
    ("message", "public"),
    [
        (
            "ffmpeg failed (1): /srv/castwork/jobs/acme/0123/work/layers/a.png: No such file",
            "ffmpeg failed (1): a.png: No such file",
        ),
        ("ffprobe cannot read /data/jobs/x/out/ad.mp4: bad", "ffprobe cannot read ad.mp4: bad"),
        ("open '/tmp/w/': denied", "open 'w': denied"),
        # Not paths: kept as they are.
        ("render 9:16: 1/2 done via http://host/a/b and ./rel/x", None),
        ("images: 9 photos; at most 8", None),
    ],
)
def test_paths_are_cut_to_their_last_part(message: str, public: str | None) -> None:
    assert without_paths(message) == (public or message)


def _logo(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGBA", size, (200, 30, 30, 255)).save(path)
    return path


def test_logos_meet_the_configured_image_limits(tmp_path: Path) -> None:
    """Logos were checked against the default limits (50 megapixels), whatever
    media.max_image_pixels said; photos were not."""
    settings = load_settings(jobs={"dir": tmp_path / "jobs"}, media={"max_image_pixels": 1_000_000})
    photo = tmp_path / "beans.jpg"
    photo.write_bytes(photo_bytes("coffee", 600))
    big = _logo(tmp_path / "logo.png", (1200, 1000))  # 1.2 megapixels
    spec = JobSpec(headline="Fresh beans", images=[photo], logo=big)
    with pytest.raises(InputError, match=r"logo\.png.*1 megapixel limit"):
        prepare(spec, job_root(settings, "acme", "0123456789abcdef0123"), settings)
    small = _logo(tmp_path / "small.png", (400, 300))
    spec = JobSpec(headline="Fresh beans", images=[photo], logo=small)
    prepared = prepare(spec, job_root(settings, "acme", "0123456789abcdef0124"), settings)
    assert prepared.logo is not None and prepared.logo.exists()
