"""One attempt at announcing a finished job at its webhook: sign, POST, log the attempt.

The body is the job as the API shows it (``JobRecord.public()``, the formats' file names, its
quality report with ``flagged`` at the top, and the job's API path; download links come from ``GET /v1/jobs/{id}`` with the merchant's key),
``webhook-id`` is ``<job id>-<status>`` (the same for every retry: receivers drop repeats),
the signature the Standard Webhooks library's. Each attempt is kept in the job's delivery log
(the last 20), which the job view shows.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from base.errors import CastworkError
from workers.settings import WebhookSettings
from workers.store import JobNotFound, JobRecord, JobStore
from workers.webhooks.targets import WebhookRefused, check_url

log = logging.getLogger(__name__)

KEEP_DELIVERIES = 20
_KEEP_S = 30 * 86_400


class WebhookFailed(CastworkError):
    """The webhook did not answer 2xx in time (transient: retried with backoff)."""

    transient = True
    code = "webhook_failed"


def merchant_secret(store: JobStore, merchant: str) -> str:
    """The merchant's signing secret (``whsec_`` + 24 random bytes, base64), made on first use
    and kept in Redis: every API server and worker signs with the same one."""
    key = f"{store.prefix}:webhooks:secret:{merchant}"
    store.r.set(key, "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(), nx=True)
    value = store.r.get(key)
    assert value is not None
    return value.decode() if isinstance(value, bytes) else str(value)


def payload(record: JobRecord, status: str) -> dict[str, Any]:
    data: dict[str, Any] = {**record.public(), "status": status, "url": f"/v1/jobs/{record.id}"}
    if record.manifest is not None:
        data["files"] = sorted(record.manifest.downloads())
        # A receiver that sends ads on by itself must see a flagged one (media.quality).
        quality = record.manifest.quality
        data["quality"] = quality.model_dump(mode="json") if quality else None
        data["flagged"] = bool(quality and quality.flagged)
    return {
        "type": f"job.{status}",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data,
    }


def deliveries(store: JobStore, job_id: str) -> list[dict[str, Any]]:
    """The job's delivery log, oldest first."""
    return [json.loads(raw) for raw in store.r.lrange(store.deliveries_key(job_id), 0, -1)]


def _log_attempt(store: JobStore, job_id: str, entry: dict[str, Any]) -> None:
    key = store.deliveries_key(job_id)
    pipe = store.r.pipeline(transaction=True)
    pipe.rpush(key, json.dumps(entry))
    pipe.ltrim(key, -KEEP_DELIVERIES, -1)
    pipe.expire(key, _KEEP_S)
    pipe.execute()


def deliver(
    settings: WebhookSettings, store: JobStore, job_id: str, status: str, *, attempt: int
) -> None:
    """One attempt; :class:`WebhookFailed` when it should be tried again."""
    try:
        record = store.get(job_id)
    except JobNotFound:
        log.info("job %s is gone: its %s webhook is dropped", job_id, status)
        return
    entry: dict[str, Any] = {"at": round(time.time(), 3), "attempt": attempt, "event": status}
    try:  # again now: the name may point elsewhere since the job was submitted
        url = check_url(record.webhook_url, allow_private=settings.allow_private)
    except WebhookRefused as exc:
        _log_attempt(store, job_id, {**entry, "ok": False, "error": str(exc)})
        log.warning("job %s: webhook refused: %s", job_id, exc)
        return
    message_id = f"{job_id}-{status}"
    body = json.dumps(payload(record, status), ensure_ascii=False).encode()
    now = datetime.now(UTC)
    signature = Webhook(merchant_secret(store, record.merchant)).sign(message_id, now, body)
    headers = {
        "content-type": "application/json",
        "user-agent": "Castwork-Webhooks/1",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    t0 = time.perf_counter()
    try:
        answer = httpx.post(
            url, content=body, headers=headers, timeout=settings.timeout_s, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        took = round((time.perf_counter() - t0) * 1000, 1)
        reason = f"{type(exc).__name__}: {exc}"[:300]
        _log_attempt(store, job_id, {**entry, "ok": False, "ms": took, "error": reason})
        raise WebhookFailed(f"webhook did not answer: {reason}") from None
    took = round((time.perf_counter() - t0) * 1000, 1)
    ok = 200 <= answer.status_code < 300
    _log_attempt(store, job_id, {**entry, "ok": ok, "ms": took, "status_code": answer.status_code})
    if not ok:
        raise WebhookFailed(f"webhook answered {answer.status_code}")
    log.info("job %s: %s webhook delivered (attempt %d, %.0f ms)", job_id, status, attempt, took)
