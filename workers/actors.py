"""Dramatiq actors for ad jobs: narrate -> render each format (in parallel) -> finalize.

Each actor is a thin shell over one idempotent stage of :mod:`media.pipeline`:

- **At least once, made safe.** A message can run twice (a worker killed mid-render, a lost
  ack). Stages skip work whose result exists; outputs are named by the hash of their plan and
  appear by atomic rename; the job record refuses to move backwards (:mod:`workers.store`).
- **Fan-out without a results backend.** ``narrate`` enqueues one ``render`` per format; each
  render records its format in a Redis set, and the render that completes the set enqueues
  ``finalize``. If two renders both see it complete, finalize simply runs twice (idempotent).
- **Retries.** A permanent error (bad photo, bad field) fails the job at once with its reason.
  A transient one (timeout, Redis hiccup, an unexpected exception) is retried with backoff
  by dramatiq; when retries run out, the job fails with the last reason. Nothing is silent.

Actors are declared on a broker passed in (:func:`declare`), so the API process can enqueue
by name without importing worker code, and tests can use their own broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from media.errors import RenderCancelled
from media.job import JobSpec
from media.pipeline import (
    JobPaths,
    NarrationEngines,
    finalize,
    job_root,
    narrate_job,
    prepare,
    read_json,
    render_format,
)
from voice.config import Settings
from voice.errors import CastworkError
from voice.logs import bound
from workers.store import JobNotFound, JobStore

log = logging.getLogger(__name__)

QUEUE = "castwork-ads"
NARRATE, RENDER, FINALIZE = "castwork.narrate", "castwork.render", "castwork.finalize"


@dataclass
class Context:
    settings: Settings
    store: JobStore
    broker: dramatiq.Broker
    engines: NarrationEngines


def enqueue(broker: dramatiq.Broker, actor_name: str, *args: Any) -> None:
    """Send a message by actor name (the API does not import the actors)."""
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE, actor_name=actor_name, args=args, kwargs={}, options={})
    )


def _paths(ctx: Context, job_id: str) -> tuple[JobPaths, str]:
    record = ctx.store.get(job_id)
    return job_root(ctx.settings, record.merchant, job_id), record.merchant


def _spec(paths: JobPaths) -> JobSpec:
    """The prepared job (normalized inputs), or the request as submitted before prepare."""
    path = paths.spec_file if paths.spec_file.exists() else paths.request_file
    return JobSpec.model_validate(read_json(path))


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _guard(ctx: Context, job_id: str, stage: str, work: Callable[[], None]) -> None:
    """Run one stage: skip finished jobs; turn errors into retries or a failed job."""
    with bound(job_id=job_id):
        try:
            if not ctx.store.start_stage(job_id, stage):
                log.info("job %s is finished or cancelled; %s skipped", job_id, stage)
                return
            work()
        except JobNotFound:
            log.warning("job %s no longer exists; %s dropped", job_id, stage)
        except RenderCancelled:
            log.info("job %s cancelled during %s", job_id, stage)
        except CastworkError as exc:
            if exc.transient and _retries() < ctx.settings.jobs.max_retries:
                log.warning("job %s %s: %s (will retry)", job_id, stage, exc)
                raise
            ctx.store.fail(job_id, exc.code, f"{stage}: {exc}")
            log.warning("job %s failed in %s: %s", job_id, stage, exc)
        except Exception as exc:
            # Unknown trouble (disk, Redis, a bug): retry, then fail with the reason.
            attempt = _retries() + 1
            if attempt <= ctx.settings.jobs.max_retries:
                log.warning("job %s %s attempt %d: %r (will retry)", job_id, stage, attempt, exc)
                raise
            ctx.store.fail(job_id, "internal_error", f"{stage} failed {attempt} times: {exc}")
            log.exception("job %s failed in %s", job_id, stage)


def declare(ctx: Context) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare the three actors on ``ctx.broker``."""
    jobs = ctx.settings.jobs
    options: dict[str, Any] = {
        "max_retries": jobs.max_retries,
        "min_backoff": jobs.min_backoff_ms,
        "max_backoff": jobs.max_backoff_ms,
        "time_limit": int(jobs.time_limit_s * 1000),
    }

    def narrate(job_id: str) -> None:
        def work() -> None:
            paths, _ = _paths(ctx, job_id)
            spec = prepare(_spec(paths), paths, ctx.settings)
            ctx.store.progress(job_id, "prepare", 1.0)
            narrate_job(spec, paths, ctx.settings, ctx.engines)
            ctx.store.progress(job_id, "narrate", 1.0)
            for aspect in spec.formats:
                enqueue(ctx.broker, RENDER, job_id, aspect)

        _guard(ctx, job_id, "narrate", work)

    def render(job_id: str, aspect: str) -> None:
        stage = f"render {aspect}"

        def work() -> None:
            paths, _ = _paths(ctx, job_id)
            spec = _spec(paths)
            render_format(
                spec,
                paths,
                ctx.settings,
                aspect,  # type: ignore[arg-type]
                on_progress=_throttled(lambda s: ctx.store.progress(job_id, stage, s)),
                should_cancel=lambda: ctx.store.is_cancelled(job_id),
            )
            if set(spec.formats) <= ctx.store.format_done(job_id, aspect):
                enqueue(ctx.broker, FINALIZE, job_id)

        _guard(ctx, job_id, stage, work)

    def finalize_job(job_id: str) -> None:
        def work() -> None:
            paths, _ = _paths(ctx, job_id)
            manifest = finalize(_spec(paths), paths, ctx.settings)
            ctx.store.finish(job_id, manifest)

        _guard(ctx, job_id, "finalize", work)

    made = {}
    for name, fn in ((NARRATE, narrate), (RENDER, render), (FINALIZE, finalize_job)):
        made[name] = dramatiq.Actor(
            fn,
            broker=ctx.broker,
            actor_name=name,
            queue_name=QUEUE,
            priority=0,
            options=options,
        )
    return made


def _throttled(report: Callable[[float], object], every_s: float = 0.5) -> Callable[[float], None]:
    """At most one progress write per ``every_s``: ffmpeg reports many times a second."""
    last = [0.0]

    def call(share: float) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            report(share)

    return call
