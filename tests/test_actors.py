"""The actors' error policy: permanent errors fail the job at once, transient ones are
raised for dramatiq to retry until the retries run out, then the job fails with the reason;
Redis down is waited out, never a failure of the job."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any
from unittest import mock

import dramatiq
import pytest
import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import TimeLimitExceeded

from media.errors import InputError, RenderError
from media.pipeline import NarrationEngines
from workers import actors
from workers.actors import Context
from workers.broker import PatientRetries
from workers.settings import load_settings
from workers.storage import open_storage
from workers.store import JobStore


@pytest.fixture
def ctx(redis_url: str, tmp_path: Path) -> Context:
    settings = load_settings(jobs={"dir": tmp_path, "max_retries": 2})
    return Context(
        settings,
        JobStore.from_url(redis_url),
        StubBroker(),
        NarrationEngines(settings),
        open_storage(settings),
    )


def _job(ctx: Context) -> str:
    job_id = ctx.store.new_id()
    ctx.store.create(job_id, "acme", template="sale", formats=["1:1"], fields={})
    return job_id


def _retries(n: int) -> mock._patch[mock.MagicMock]:
    return mock.patch.object(actors, "_retries", return_value=n)


def test_permanent_error_fails_the_job_without_retry(ctx: Context) -> None:
    job = _job(ctx)

    def work() -> None:
        raise InputError("photo.jpg: the file is truncated or corrupt")

    with _retries(0):
        actors._guard(ctx, job, "narrate", work)  # does not raise: no retry
    record = ctx.store.get(job)
    assert (record.status, record.error_code) == ("failed", "bad_input")
    assert record.error == "narrate: photo.jpg: the file is truncated or corrupt"


def test_transient_error_retries_then_fails_with_reason(ctx: Context) -> None:
    job = _job(ctx)
    timeout = RenderError("ffmpeg took longer than its time limit")
    timeout.transient = True

    def work() -> None:
        raise timeout

    for attempt in range(2):  # max_retries = 2: raised twice for dramatiq to retry
        with _retries(attempt), pytest.raises(RenderError):
            actors._guard(ctx, job, "render 1:1", work)
        assert ctx.store.get(job).status == "running"
    with _retries(2):
        actors._guard(ctx, job, "render 1:1", work)
    record = ctx.store.get(job)
    assert record.status == "failed" and "time limit" in record.error


def test_unexpected_error_is_retried_too(ctx: Context) -> None:
    job = _job(ctx)

    def work() -> None:
        raise OSError(errno.EIO, "Input/output error")

    with _retries(0), pytest.raises(OSError):
        actors._guard(ctx, job, "render 1:1", work)
    with _retries(2):
        actors._guard(ctx, job, "render 1:1", work)
    record = ctx.store.get(job)
    assert record.error_code == "internal_error" and "Input/output error" in record.error


def test_disk_full_is_retried_then_fails_and_read_only_fails_at_once(ctx: Context) -> None:
    full, read_only = _job(ctx), _job(ctx)

    def no_space() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/jobs/a/b/out/layer.png")

    def ro() -> None:
        raise OSError(errno.EROFS, "Read-only file system", "/jobs/a/b/out/layer.png")

    with _retries(0), pytest.raises(OSError):
        actors._guard(ctx, full, "render 1:1", no_space)
    with _retries(2):
        actors._guard(ctx, full, "render 1:1", no_space)
    record = ctx.store.get(full)
    assert record.error_code == "disk_full"
    # The file's name, never the server's directories.
    assert record.error == (
        "render 1:1: cannot write layer.png: No space left on device (ENOSPC) (failed 3 times)"
    )
    with _retries(0):
        actors._guard(ctx, read_only, "render 1:1", ro)  # permanent: not raised for a retry
    record = ctx.store.get(read_only)
    assert record.error_code == "storage_unwritable"
    assert record.error == "render 1:1: cannot write layer.png: Read-only file system (EROFS)"


def test_time_limit_interrupt_is_retried_then_fails_the_job(ctx: Context) -> None:
    """dramatiq's TimeLimitExceeded is a BaseException: ``except Exception`` let it through,
    and the job stayed "running" after its last attempt."""
    job = _job(ctx)

    def work() -> None:
        raise TimeLimitExceeded()

    with _retries(0), pytest.raises(TimeLimitExceeded):
        actors._guard(ctx, job, "narrate", work)
    assert ctx.store.get(job).status == "running"
    with _retries(2):
        actors._guard(ctx, job, "narrate", work)  # the last attempt: acked, not raised
    record = ctx.store.get(job)
    assert (record.status, record.error_code) == ("failed", "time_limit")
    assert record.error == "narrate: ran past its time limit of 900 s (failed 3 times)"


def test_redis_down_mid_stage_waits_and_runs_the_stage_again(ctx: Context) -> None:
    job = _job(ctx)
    runs = []

    def work() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise redis.ConnectionError("Connection refused")

    with _retries(0):
        actors._guard(ctx, job, "render 1:1", work)  # not raised: dramatiq never sees it
    assert len(runs) == 3 and ctx.store.get(job).status == "running"


def test_a_retry_is_sent_once_redis_answers_again() -> None:
    broker = StubBroker()
    options = {"max_retries": 3, "min_backoff": 10, "max_backoff": 10}
    dramatiq.Actor(
        lambda: None, broker=broker, actor_name="a", queue_name="q", priority=0, options=options
    )
    sent: list[dramatiq.Message[Any]] = []

    def enqueue(message: dramatiq.Message[Any], *, delay: int | None = None) -> None:
        if len(sent) < 2:
            sent.append(message)
            raise redis.ConnectionError("Connection refused")  # Redis restarting
        sent.append(message)

    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="q", actor_name="a", args=(), kwargs={}, options={}
    )
    with mock.patch.object(broker, "enqueue", enqueue):
        PatientRetries().after_process_message(
            broker, MessageProxy(message), exception=RuntimeError("boom")
        )
    # Stock Retries would have logged the failed send and let the original be acked: lost.
    assert len(sent) == 3 and sent[-1].options["retries"] == 1


def test_finished_or_cancelled_jobs_are_skipped(ctx: Context) -> None:
    job = _job(ctx)
    assert ctx.store.cancel(job)
    ran = []
    actors._guard(ctx, job, "narrate", lambda: ran.append(1))
    assert ran == [] and ctx.store.get(job).status == "cancelled"
    # A late progress update or a redelivered finish never revives it.
    assert not ctx.store.progress(job, "render 1:1", 0.5)
    assert not ctx.store.finish(job, {"outputs": [], "preview": "preview.mp4"})
    assert ctx.store.get(job).status == "cancelled"
