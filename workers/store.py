"""Job records in Redis: status, progress, outputs, ownership, idempotency keys.

One hash per job (``castwork:job:<id>``), one sorted set of job ids per merchant, one key per
(merchant, Idempotency-Key). State changes go through small Lua scripts so that two workers
(a redelivered message beside the original) can never move a finished job backwards, e.g. a
late progress update over ``done`` or a retry over ``cancelled``.

States::

    queued -> running -> done
       ^         |   \\-> failed      (a permanent error, retries used up, the time limit, a
       |         |                    worker that died every time, stranded: with a reason)
       |         \\-----> cancelled   (by the merchant; workers stop at their next check)
       \\--------/                    (requeue: a worker stopping hands the job back)

What is stored is what the API shows, so two rules are kept here, once: a manifest may name
only plain files in the job's ``out/`` folder (checked when written and again when read back,
so an altered record cannot serve a file from elsewhere), and an error message never carries
a server path (reduced to the file's name).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis
from pydantic import ValidationError

from base.errors import CastworkError
from media.folder import Manifest

log = logging.getLogger(__name__)

Status = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
PREFIX = "castwork"
IDEMPOTENCY_TTL_S = 24 * 3600
# A job id as new_id makes it (hex: milliseconds, then 16 random digits), and a merchant id
# as api.keys allows it ("local" without keys): both are folder names under jobs_dir.
JOB_ID = re.compile(r"[0-9a-f]{8,64}")
MERCHANT = re.compile(r"[A-Za-z0-9_-]{1,40}")

# Weights of the stages in the overall percentage; renders share their part equally.
_PREPARE, _NARRATE, _RENDER, _FINALIZE = 5.0, 15.0, 75.0, 5.0

# Set fields only while the job is not finished. KEYS[1] job hash, KEYS[2] the webhook
# outbox; ARGV: field, value, ... A job that finishes here and names a webhook is put in the
# outbox in the same step: its announcement cannot be lost between the two (workers.webhooks).
_UPDATE_IF_ACTIVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'done' or status == 'failed' or status == 'cancelled' then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
local now = redis.call('HGET', KEYS[1], 'status')
if (now == 'done' or now == 'failed' or now == 'cancelled')
    and redis.call('HEXISTS', KEYS[1], 'webhook_url') == 1 then
  redis.call('RPUSH', KEYS[2], redis.call('HGET', KEYS[1], 'id') .. ' ' .. now)
end
return 1
"""

# Count one more start of a message for a job not finished; 0 when it is finished or gone
# (HINCRBY alone would create a hash for a deleted job). KEYS[1] job hash; ARGV[1] field.
_COUNT_IF_ACTIVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'done' or status == 'failed' or status == 'cancelled' then
  return 0
end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""


class BadManifest(CastworkError, ValueError):
    """A manifest names something other than a plain file of the job's ``out/`` folder."""

    code = "bad_manifest"


def checked_manifest(manifest: Any) -> Manifest:
    """``manifest`` as a :class:`~media.folder.Manifest` if every file it names is a plain
    name of the job's ``out/`` folder; else :class:`BadManifest`."""
    if isinstance(manifest, Manifest):
        manifest = manifest.model_dump(mode="json")
    try:
        return Manifest.model_validate(manifest)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise BadManifest(f"{where}: {first['msg']}") from None


# An absolute path (not inside a URL or a relative path), as the OS and ffmpeg write them.
_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^\s/'\"]+)+/?")


def without_paths(message: str) -> str:
    """``message`` with every absolute path cut to its last part: a job's error reaches the
    merchant, and the server's folders (its data directory, other jobs' ids) are not theirs."""
    return _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], message)


@dataclass
class JobRecord:
    id: str
    merchant: str
    status: Status
    created: float
    updated: float
    template: str
    formats: list[str]
    stage: str = ""
    error: str = ""
    error_code: str = ""
    manifest: Manifest | None = None
    shares: dict[str, float] = field(default_factory=dict)  # stage -> share done (0..1)
    fields: dict[str, Any] = field(default_factory=dict)  # the job's copy fields, for lists
    ran: dict[str, str] = field(default_factory=dict)  # stage -> the process (host:pid) it ran in
    webhook_url: str = ""  # announced there when the job finishes (workers.webhooks)

    @property
    def percent(self) -> float:
        if self.status == "done":
            return 100.0
        s = self.shares
        renders = [s.get(f"render {f}", 0.0) for f in self.formats] or [0.0]
        total = (
            _PREPARE * s.get("prepare", 0.0)
            + _NARRATE * s.get("narrate", 0.0)
            + _RENDER * sum(renders) / len(renders)
            + _FINALIZE * s.get("finalize", 0.0)
        )
        return round(min(99.0, total), 1)

    def public(self) -> dict[str, Any]:
        """What the API shows: no internal fields."""
        return {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "percent": self.percent,
            "template": self.template,
            "formats": self.formats,
            "created": self.created,
            "updated": self.updated,
            "error": {"code": self.error_code, "message": self.error} if self.error else None,
            "fields": self.fields,
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class JobNotFound(CastworkError, KeyError):
    """No job by that id (never made, expired, or deleted)."""

    code = "job_not_found"


class IdempotencyConflict(CastworkError, ValueError):
    """The same Idempotency-Key was used before with a different request."""

    code = "idempotency_conflict"


class JobStore:
    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX) -> None:
        self.r = client
        self.prefix = prefix
        self._update = client.register_script(_UPDATE_IF_ACTIVE)
        self._count = client.register_script(_COUNT_IF_ACTIVE)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5))

    @property
    def outbox(self) -> str:
        """Jobs that finished and name a webhook ("<job id> <status>"), oldest first."""
        return f"{self.prefix}:webhooks:outbox"

    def deliveries_key(self, job_id: str) -> str:
        return f"{self._job(job_id)}:deliveries"

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _list(self, merchant: str) -> str:
        return f"{self.prefix}:merchant:{merchant}:jobs"

    def _idem(self, merchant: str, key: str) -> str:
        return f"{self.prefix}:idem:{merchant}:{key}"

    # --- create / read -------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        # Sortable by time, unguessable: a merchant cannot enumerate other jobs.
        return f"{int(time.time() * 1000):x}{secrets.token_hex(8)}"

    def reserve_idempotency(
        self, merchant: str, key: str, request_hash: str, job_id: str
    ) -> str | None:
        """Claim ``key`` for ``job_id``; return the job id it already names, if any."""
        name = self._idem(merchant, key)
        value = json.dumps({"job": job_id, "hash": request_hash})
        if self.r.set(name, value, nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        raw = self.r.get(name)
        if raw is None:  # expired between the two calls: take it
            self.r.set(name, value, ex=IDEMPOTENCY_TTL_S)
            return None
        known = json.loads(raw)
        if known["hash"] != request_hash:
            raise IdempotencyConflict(key)
        return str(known["job"])

    def release_idempotency(self, merchant: str, key: str) -> None:
        self.r.delete(self._idem(merchant, key))

    def claim(self, what: str, ttl_s: float) -> bool:
        """True for one caller in ``ttl_s`` across processes and machines (a periodic task)."""
        ttl_ms = max(1, int(ttl_s * 1000))
        return bool(self.r.set(f"{self.prefix}:lock:{what}", "1", nx=True, px=ttl_ms))

    def create(
        self,
        job_id: str,
        merchant: str,
        *,
        template: str,
        formats: list[str],
        fields: dict[str, Any],
        webhook_url: str | None = None,
    ) -> JobRecord:
        now = time.time()
        record = {
            "id": job_id,
            "merchant": merchant,
            "status": "queued",
            "created": repr(now),
            "updated": repr(now),
            "template": template,
            "formats": json.dumps(formats),
            "fields": json.dumps(fields, ensure_ascii=False),
            "stage": "queued",
            **({"webhook_url": webhook_url} if webhook_url else {}),
        }
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._job(job_id), mapping=cast(Any, record))
        pipe.zadd(self._list(merchant), {job_id: now})
        pipe.execute()
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        raw = self.r.hgetall(self._job(job_id))
        if not raw:
            raise JobNotFound(job_id)
        d = {_text(k): _text(v) for k, v in raw.items()}
        shares = {k[len("share:") :]: float(v) for k, v in d.items() if k.startswith("share:")}
        return JobRecord(
            id=d["id"],
            merchant=d["merchant"],
            status=d["status"],  # type: ignore[arg-type]
            created=float(d["created"]),
            updated=float(d["updated"]),
            template=d["template"],
            formats=json.loads(d["formats"]),
            stage=d.get("stage", ""),
            error=d.get("error", ""),
            error_code=d.get("error_code", ""),
            manifest=_read_manifest(job_id, d.get("manifest")),
            shares=shares,
            fields=json.loads(d.get("fields", "{}")),
            ran={k[len("ran:") :]: v for k, v in d.items() if k.startswith("ran:")},
            webhook_url=d.get("webhook_url", ""),
        )

    def merchants(self) -> list[str]:
        """Every merchant with a job list (for retention)."""
        head, tail = f"{self.prefix}:merchant:", ":jobs"
        keys = self.r.scan_iter(match=f"{head}*{tail}", count=500)
        return sorted({_text(k)[len(head) : -len(tail)] for k in keys})

    def job_ids(self, merchant: str) -> list[str]:
        """All of a merchant's job ids, oldest first (for retention)."""
        return [_text(i) for i in self.r.zrange(self._list(merchant), 0, -1)]

    def get_for(self, merchant: str, job_id: str) -> JobRecord:
        """A job of this merchant; another merchant's job is indistinguishable from none."""
        record = self.get(job_id)
        if record.merchant != merchant:
            raise JobNotFound(job_id)
        return record

    def list(self, merchant: str, *, limit: int = 50, offset: int = 0) -> list[JobRecord]:
        ids = self.r.zrevrange(self._list(merchant), offset, offset + limit - 1)
        records = []
        for raw in ids:
            try:
                records.append(self.get(_text(raw)))
            except JobNotFound:  # expired or deleted since: skip
                continue
        return records

    def active_count(self, merchant: str) -> int:
        recent = self.list(merchant, limit=200)
        return sum(1 for r in recent if r.status not in TERMINAL)

    # --- state changes -------------------------------------------------------------------

    def _set_if_active(self, job_id: str, **values: str) -> bool:
        args: list[str] = []
        for k, v in {**values, "updated": repr(time.time())}.items():
            args += [k, v]
        return bool(self._update(keys=[self._job(job_id), self.outbox], args=args))

    def start_stage(self, job_id: str, stage: str, *, by: str = "") -> bool:
        """Mark the job running in ``stage`` (in process ``by``, host:pid); False if it is
        already finished (skip work)."""
        where = {f"ran:{stage}": by} if by else {}
        return self._set_if_active(
            job_id, status="running", stage=stage, **{f"share:{stage}": "0"}, **where
        )

    def progress(self, job_id: str, stage: str, share: float) -> bool:
        return self._set_if_active(job_id, **{f"share:{stage}": f"{share:.4f}"})

    def format_done(self, job_id: str, aspect: str) -> set[str]:
        """Record one rendered format; return all formats rendered so far."""
        key = f"{self._job(job_id)}:rendered"
        pipe = self.r.pipeline(transaction=True)
        pipe.sadd(key, aspect)
        pipe.smembers(key)
        pipe.expire(key, 30 * 24 * 3600)
        _, members, _ = pipe.execute()
        self.progress(job_id, f"render {aspect}", 1.0)
        return {_text(m) for m in members}

    def finish(self, job_id: str, manifest: Manifest | Mapping[str, Any]) -> bool:
        checked = checked_manifest(manifest)
        return self._set_if_active(
            job_id,
            status="done",
            stage="done",
            manifest=checked.model_dump_json(),
            **{"share:finalize": "1"},
        )

    def fail(self, job_id: str, code: str, message: str) -> bool:
        return self._set_if_active(
            job_id,
            status="failed",
            stage="failed",
            error=without_paths(message)[:1000],
            error_code=code,
        )

    def requeue(self, job_id: str) -> bool:
        """Back to queued: its worker is stopping mid-stage, and the message comes again."""
        return self._set_if_active(job_id, status="queued", stage="queued")

    def count_start(self, job_id: str, delivery: str) -> int:
        """One more start of ``delivery`` (a message id) on an unfinished job: how many so far,
        0 if the job is finished or gone. dramatiq counts the retries it sends, not a message
        redelivered because its worker died (killed, out of memory): this counts both."""
        return int(self._count(keys=[self._job(job_id)], args=[f"starts:{delivery}"]))

    def cancel(self, job_id: str) -> bool:
        return self._set_if_active(job_id, status="cancelled", stage="cancelled")

    def is_cancelled(self, job_id: str) -> bool:
        return self.r.hget(self._job(job_id), "status") == b"cancelled"

    def status(self, job_id: str) -> str | None:
        raw = self.r.hget(self._job(job_id), "status")
        return _text(raw) if raw else None

    def delete(self, merchant: str, job_id: str) -> None:
        """The job's record, its rendered-formats set, its webhook deliveries and its place
        in the merchant's list."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._job(job_id), f"{self._job(job_id)}:rendered", self.deliveries_key(job_id))
        pipe.zrem(self._list(merchant), job_id)
        pipe.execute()


def _read_manifest(job_id: str, raw: str | None) -> Manifest | None:
    if not raw:
        return None
    try:
        return checked_manifest(json.loads(raw))
    except ValueError as exc:  # BadManifest, or not JSON
        log.error("job %s: its stored manifest is refused (%s); no file is served", job_id, exc)
        return None
