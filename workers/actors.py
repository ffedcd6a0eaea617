"""Dramatiq actors for ad jobs: narrate -> render each format (in parallel) -> finalize.

Each actor is a thin shell over one idempotent stage of :mod:`media.pipeline`:

- **At least once, made safe.** A message can run twice (a worker killed mid-render, a lost
  ack). Stages skip work whose result exists; outputs are named by the hash of their plan and
  appear by atomic rename; the job record refuses to move backwards (:mod:`workers.store`).
- **Fan-out without a results backend.** ``narrate`` enqueues one ``render`` per format; each
  render records its format in a Redis set, and the render that completes the set enqueues
  ``finalize``. If two renders both see it complete, finalize simply runs twice (idempotent).
- **Retries.** A permanent error (bad photo, bad field, a read-only output directory) fails
  the job at once with its reason. A transient one (timeout, a full disk, an unexpected
  exception, a stage past ``jobs.time_limit_s``) is retried with backoff by dramatiq; when
  retries run out, the job fails with the last reason. Nothing is silent.
- **Interrupts.** dramatiq stops a stage past its time limit, or a worker shutting down, by
  raising a ``BaseException`` in its thread, which ``except Exception`` never sees: without
  care the job stayed ``running`` for good (and counted against the merchant's active jobs).
  A time limit is handled like a transient error; a shutdown hands the job back to ``queued``.
- **Poison messages.** A stage that kills its worker (out of memory, a native crash) comes
  back as a redelivery, which dramatiq does not count as a retry. Each start of a message is
  counted in the job's record; past ``max_retries + 1`` starts the job fails with a reason
  and the message is acked, never delivered again.
- **Files anywhere.** A stage works in a folder lent by the job storage
  (:mod:`workers.storage`): the job's own folder on a local disk, or a scratch copy of what it
  reads from an S3 store, whose results are uploaded before they are recorded here (a render
  counts once its video is stored), so workers on other machines take the next stages.
- **Redis down** (restarted, failing over) is no failure of the job: a stage waits for it
  and runs again (:func:`_guard`), a render goes on meanwhile, and the broker keeps retries
  and delayed messages through the outage (:mod:`workers.broker`).

Actors are declared on a broker passed in (:func:`declare`), so the API process can enqueue
by name without importing worker code, and tests can use their own broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, Shutdown, TimeLimitExceeded

from base.errors import CastworkError
from base.logs import bound
from media.errors import RenderCancelled, storage_error
from media.folder import JobPaths
from media.job import JobSpec
from media.pipeline import (
    NarrationEngines,
    finalize,
    narrate_job,
    prepare,
    render_format,
    render_target,
)
from workers.broker import REDIS_DOWN, until_redis_answers
from workers.settings import Settings
from workers.storage import JobStorage
from workers.storage.contracts import FINALIZE_PARTS, NARRATE_PARTS, RENDER_PARTS
from workers.store import JobNotFound, JobStore
from workers.webhooks.delivery import WebhookFailed, deliver

log = logging.getLogger(__name__)

QUEUE = "castwork-ads"
WEBHOOK = "castwork.webhook"
# Which process ran a stage, in the job's record: where to look when a render went wrong.
WORKER = f"{socket.gethostname()}:{os.getpid()}"
NARRATE, RENDER, FINALIZE = "castwork.narrate", "castwork.render", "castwork.finalize"


class StageTimeLimit(CastworkError):
    """A stage ran past ``jobs.time_limit_s`` and dramatiq interrupted it (transient: a
    machine busy with other work may do it in time on a retry)."""

    transient = True
    code = "time_limit"


class WorkerLost(CastworkError):
    """A stage was started more times than its retries allow and never finished: its worker
    died each time (killed, out of memory, a native crash)."""

    code = "worker_lost"


@dataclass
class Context:
    settings: Settings
    store: JobStore
    broker: dramatiq.Broker
    engines: NarrationEngines
    storage: JobStorage


def enqueue(broker: dramatiq.Broker, actor_name: str, *args: Any) -> None:
    """Send a message by actor name (the API does not import the actors)."""
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE, actor_name=actor_name, args=args, kwargs={}, options={})
    )


def _spec(paths: JobPaths) -> JobSpec:
    """The prepared job (normalized inputs), or the request as submitted before prepare."""
    return paths.read_spec(paths.spec_file if paths.spec_file.exists() else paths.request_file)


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _delivery(stage: str) -> str:
    """What a start is counted under: the message's id, which its retries and redeliveries
    keep (two finalize messages of one job are two deliveries); the stage without one."""
    message = CurrentMessage.get_current_message()
    return message.message_id if message is not None else stage


def _guard(ctx: Context, job_id: str, stage: str, work: Callable[[], None]) -> None:
    """Run one stage: skip finished jobs; turn errors into retries or a failed job.

    Redis down (restarted, failing over) is nobody's fault and is not handed to dramatiq's
    retry, which is a new message sent to the Redis that is down (see PatientRetries): the
    stage waits here until Redis answers and runs again. Stages are idempotent, so what was
    done before the outage is found and kept (a finished render is not rendered again), and
    the message stays unacked in Redis meanwhile: a worker stopped while waiting loses
    nothing, its message is redelivered."""
    with bound(job_id=job_id):
        what = f"job {job_id} {stage}"
        # Counted once per delivery, outside the wait: an outage mid-stage is not a start.
        starts = until_redis_answers(
            lambda: ctx.store.count_start(job_id, _delivery(stage)), what=what
        )
        attempts = ctx.settings.jobs.max_retries + 1
        if starts > attempts:
            lost = WorkerLost(
                f"started {starts - 1} times and never finished: its worker stopped mid-stage "
                "(killed, or out of memory?)"
            )
            until_redis_answers(
                lambda: ctx.store.fail(job_id, lost.code, f"{stage}: {lost}"), what=what
            )
            log.error("job %s failed in %s: %s", job_id, stage, lost)
            return
        until_redis_answers(lambda: _run_stage(ctx, job_id, stage, work), what=what)


def _run_stage(ctx: Context, job_id: str, stage: str, work: Callable[[], None]) -> None:
    try:
        if not ctx.store.start_stage(job_id, stage, by=WORKER):
            log.info("job %s is finished or cancelled; %s skipped", job_id, stage)
            return
        work()
    except REDIS_DOWN:
        raise  # for _guard: not a failure of the job
    except JobNotFound:
        log.warning("job %s no longer exists; %s dropped", job_id, stage)
    except RenderCancelled:
        log.info("job %s cancelled during %s", job_id, stage)
    except TimeLimitExceeded:
        limit = StageTimeLimit(f"ran past its time limit of {ctx.settings.jobs.time_limit_s:g} s")
        if _settle(ctx, job_id, stage, limit):
            raise
    except Shutdown:
        # The worker is stopping (notify_shutdown): dramatiq sends the message again, so the
        # job waits for it as queued; a failure would be wrong, "running" a lie.
        ctx.store.requeue(job_id)
        log.info("job %s handed back during %s: the worker is stopping", job_id, stage)
        raise
    except Exception as exc:
        if _settle(ctx, job_id, stage, exc):
            raise


def _settle(ctx: Context, job_id: str, stage: str, exc: Exception) -> bool:
    """Fail the job for ``exc``, or return True: raise it again for dramatiq to retry."""
    attempt = _retries() + 1
    retries_left = attempt <= ctx.settings.jobs.max_retries
    known = _known_error(exc)
    if known is None:
        # Unknown trouble (a bug, an OS error we do not classify): retry, then fail.
        if retries_left:
            log.warning("job %s %s attempt %d: %r (will retry)", job_id, stage, attempt, exc)
            return True
        ctx.store.fail(job_id, "internal_error", f"{stage} failed {attempt} times: {exc}")
        log.error("job %s failed in %s", job_id, stage, exc_info=exc)
        return False
    if known.transient and retries_left:
        log.warning("job %s %s attempt %d: %s (will retry)", job_id, stage, attempt, known)
        return True
    tries = f" (failed {attempt} times)" if known.transient else ""
    ctx.store.fail(job_id, known.code, f"{stage}: {known}{tries}")
    log.warning("job %s failed in %s: %s%s", job_id, stage, known, tries)
    return False


def _known_error(exc: Exception) -> CastworkError | None:
    """``exc`` as one of our errors (which say whether a retry can help), or None."""
    if isinstance(exc, CastworkError):
        return exc
    if isinstance(exc, OSError):
        # Disk full / read-only while writing job files from Python (PNG layers, JSON):
        # the same classes as when ffmpeg reports it (media.errors.storage_error).
        return storage_error(exc)
    return None


def declare(ctx: Context) -> dict[str, dramatiq.Actor[Any, Any]]:
    """Declare the three job actors and the webhook one on ``ctx.broker``."""
    jobs = ctx.settings.jobs
    options: dict[str, Any] = {
        "max_retries": jobs.max_retries,
        "min_backoff": jobs.min_backoff_ms,
        "max_backoff": jobs.max_backoff_ms,
        "time_limit": int(jobs.time_limit_s * 1000),
    }

    def narrate(job_id: str) -> None:
        def work() -> None:
            merchant = ctx.store.get(job_id).merchant
            with ctx.storage.workspace(merchant, job_id, NARRATE_PARTS) as ws:
                spec = prepare(_spec(ws.paths), ws.paths, ctx.settings)
                ctx.store.progress(job_id, "prepare", 1.0)
                narrate_job(spec, ws.paths, ctx.settings, ctx.engines)
            # Only once its files are kept (in the store, for workers elsewhere).
            ctx.store.progress(job_id, "narrate", 1.0)
            for aspect in spec.formats:
                enqueue(ctx.broker, RENDER, job_id, aspect)

        _guard(ctx, job_id, "narrate", work)

    def render(job_id: str, aspect: str) -> None:
        stage = f"render {aspect}"

        def work() -> None:
            merchant = ctx.store.get(job_id).merchant
            with ctx.storage.workspace(merchant, job_id, RENDER_PARTS) as ws:
                spec = _spec(ws.paths)
                # Rendered before (a redelivered message): fetched, so not made again.
                ws.fetch(render_target(spec, ws.paths, ctx.settings, aspect))  # type: ignore[arg-type]
                render_format(
                    spec,
                    ws.paths,
                    ctx.settings,
                    aspect,  # type: ignore[arg-type]
                    on_progress=_throttled(lambda s: _report(ctx, job_id, stage, s)),
                    should_cancel=lambda: _cancelled(ctx, job_id),
                )
            if set(spec.formats) <= ctx.store.format_done(job_id, aspect):
                enqueue(ctx.broker, FINALIZE, job_id)

        _guard(ctx, job_id, stage, work)

    def finalize_job(job_id: str) -> None:
        def work() -> None:
            merchant = ctx.store.get(job_id).merchant
            with ctx.storage.workspace(merchant, job_id, FINALIZE_PARTS) as ws:
                manifest = finalize(_spec(ws.paths), ws.paths, ctx.settings)
            ctx.store.finish(job_id, manifest)

        _guard(ctx, job_id, "finalize", work)

    hooks = ctx.settings.webhooks

    def announce(job_id: str, status: str) -> None:
        attempt = _retries() + 1
        try:
            deliver(hooks, ctx.store, job_id, status, attempt=attempt)
        except WebhookFailed as exc:
            if attempt < hooks.max_attempts:
                log.info("job %s: webhook attempt %d failed (%s); retrying", job_id, attempt, exc)
                # Retried with backoff like any error, without an error trace in the log:
                # a receiver that is down is not a bug here.
                raise dramatiq.Retry(str(exc)) from None
            log.warning("job %s: webhook given up after %d attempts: %s", job_id, attempt, exc)

    made: dict[str, dramatiq.Actor[Any, Any]] = {}
    made[WEBHOOK] = dramatiq.Actor(
        announce,
        broker=ctx.broker,
        actor_name=WEBHOOK,
        queue_name=QUEUE,
        priority=0,
        options={
            "max_retries": hooks.max_attempts - 1,
            "min_backoff": hooks.min_backoff_ms,
            "max_backoff": hooks.max_backoff_ms,
            "time_limit": int(hooks.timeout_s * 3000),
        },
    )
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


# While ffmpeg runs, progress and the cancel check are best effort: a Redis outage must not
# kill a render that needs nothing from Redis until it ends (format_done, in _guard's care).


def _report(ctx: Context, job_id: str, stage: str, share: float) -> None:
    # A lost progress figure: the next one, or the stage's end, says more.
    with contextlib.suppress(*REDIS_DOWN):
        ctx.store.progress(job_id, stage, share)


def _cancelled(ctx: Context, job_id: str) -> bool:
    try:
        return ctx.store.is_cancelled(job_id)
    except REDIS_DOWN:
        return False  # cannot tell now; a check after Redis is back sees the cancel


def _throttled(report: Callable[[float], object], every_s: float = 0.5) -> Callable[[float], None]:
    """At most one progress write per ``every_s``: ffmpeg reports many times a second."""
    last = [0.0]

    def call(share: float) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            report(share)

    return call
