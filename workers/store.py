"""Job records in Redis: status, progress, outputs, ownership, idempotency keys.

One hash per job (``castwork:job:<id>``), one sorted set of job ids per merchant, one key per
(merchant, Idempotency-Key). State changes go through small Lua scripts so that two workers
(a redelivered message beside the original) can never move a finished job backwards, e.g. a
late progress update over ``done`` or a retry over ``cancelled``.

States::

    queued -> running -> done
                 |   \\-> failed      (permanent error, or retries used up: with a reason)
                 \\-----> cancelled   (by the merchant; workers stop at their next check)
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import redis

Status = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
PREFIX = "castwork"
IDEMPOTENCY_TTL_S = 24 * 3600

# Weights of the stages in the overall percentage; renders share their part equally.
_PREPARE, _NARRATE, _RENDER, _FINALIZE = 5.0, 15.0, 75.0, 5.0

# Set fields only while the job is not finished. KEYS[1] job hash; ARGV: field, value, ...
_UPDATE_IF_ACTIVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'done' or status == 'failed' or status == 'cancelled' then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


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
    manifest: dict[str, Any] | None = None
    shares: dict[str, float] = field(default_factory=dict)  # stage -> share done (0..1)
    fields: dict[str, Any] = field(default_factory=dict)  # the job's copy fields, for lists

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


class JobNotFound(KeyError):
    pass


class IdempotencyConflict(ValueError):
    """The same Idempotency-Key was used before with a different request."""


class JobStore:
    def __init__(self, client: redis.Redis, *, prefix: str = PREFIX) -> None:
        self.r = client
        self.prefix = prefix
        self._update = client.register_script(_UPDATE_IF_ACTIVE)

    @classmethod
    def from_url(cls, url: str) -> JobStore:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5))

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

    def create(
        self,
        job_id: str,
        merchant: str,
        *,
        template: str,
        formats: list[str],
        fields: dict[str, Any],
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
            manifest=json.loads(d["manifest"]) if d.get("manifest") else None,
            shares=shares,
            fields=json.loads(d.get("fields", "{}")),
        )

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
        return bool(self._update(keys=[self._job(job_id)], args=args))

    def start_stage(self, job_id: str, stage: str) -> bool:
        """Mark the job running in ``stage``; False if it is already finished (skip work)."""
        return self._set_if_active(job_id, status="running", stage=stage, **{f"share:{stage}": "0"})

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

    def finish(self, job_id: str, manifest: dict[str, Any]) -> bool:
        return self._set_if_active(
            job_id,
            status="done",
            stage="done",
            manifest=json.dumps(manifest, ensure_ascii=False),
            **{"share:finalize": "1"},
        )

    def fail(self, job_id: str, code: str, message: str) -> bool:
        return self._set_if_active(
            job_id, status="failed", stage="failed", error=message[:1000], error_code=code
        )

    def cancel(self, job_id: str) -> bool:
        return self._set_if_active(job_id, status="cancelled", stage="cancelled")

    def is_cancelled(self, job_id: str) -> bool:
        return self.r.hget(self._job(job_id), "status") == b"cancelled"

    def status(self, job_id: str) -> str | None:
        raw = self.r.hget(self._job(job_id), "status")
        return _text(raw) if raw else None
