"""The actors' error policy: permanent errors fail the job at once, transient ones are
raised for dramatiq to retry until the retries run out, then the job fails with the reason."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from dramatiq.brokers.stub import StubBroker

from media.errors import InputError, RenderError
from media.pipeline import NarrationEngines
from voice.config import load_settings
from workers import actors
from workers.actors import Context
from workers.store import JobStore


@pytest.fixture
def ctx(redis_url: str, tmp_path: Path) -> Context:
    settings = load_settings(jobs={"dir": tmp_path, "max_retries": 2})
    return Context(settings, JobStore.from_url(redis_url), StubBroker(), NarrationEngines(settings))


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
        raise OSError(28, "No space left on device")

    with _retries(0), pytest.raises(OSError):
        actors._guard(ctx, job, "render 1:1", work)
    with _retries(2):
        actors._guard(ctx, job, "render 1:1", work)
    record = ctx.store.get(job)
    assert record.error_code == "internal_error" and "No space left" in record.error


def test_finished_or_cancelled_jobs_are_skipped(ctx: Context) -> None:
    job = _job(ctx)
    assert ctx.store.cancel(job)
    ran = []
    actors._guard(ctx, job, "narrate", lambda: ran.append(1))
    assert ran == [] and ctx.store.get(job).status == "cancelled"
    # A late progress update or a redelivered finish never revives it.
    assert not ctx.store.progress(job, "render 1:1", 0.5)
    assert not ctx.store.finish(job, {"outputs": []})
    assert ctx.store.get(job).status == "cancelled"
