"""Retention: job files and records do not pile up, and no job stays queued or running for good.

A job keeps its uploads (up to ``api.max_request_mb``), normalized inputs, work files and
videos in its folder (``<jobs_dir>/<merchant>/<job id>/``, or the same names in an object
store: :mod:`workers.storage`) and its record in Redis, whose append-only file (when
``castwork serve`` manages it) sits on the same disk: a disk that fills stops everything at
once. Each pass:

- **expired**: done jobs after ``jobs.keep_days``, failed and cancelled ones after
  ``jobs.keep_failed_days`` (counted from when they finished): folder and record deleted;
- **uploads**: dropped once the job's normalized inputs exist (prepare has written
  ``work/job.json``; nothing reads the uploads after that), or once it is done;
- **quota**: a merchant over ``jobs.max_merchant_mb`` loses its oldest finished jobs first;
  queued and running ones are never touched. :func:`workers.jobs.submit` makes room the same
  way and refuses a job that still does not fit (:class:`QuotaExceeded`);
- **stranded**: a job queued or running for longer than all its stages could take with all
  their retries (:attr:`Policy.stranded_after_s`) is failed with that reason: the API that
  died between creating a record and queueing its message, or anything else that would leave
  a job "running" for good, counted against its merchant's active jobs;
- **orphans**: a job folder with no record, an hour old (the API died between saving the
  uploads and creating the record), is deleted.

:func:`plan` decides from a snapshot, with no I/O; :class:`Reaper` takes the snapshot and
carries the decisions out; :class:`Housekeeping` runs a pass every ``jobs.reap_every_s`` in
each worker process, one pass per interval across processes and machines (a lock in Redis).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import dramatiq
from prometheus_client import Counter

from base.errors import CapacityError
from base.metrics import REGISTRY
from media.errors import StorageError
from media.templates import ASPECTS
from workers.broker import REDIS_DOWN
from workers.settings import JobSettings, Settings
from workers.storage import JobStorage, open_storage
from workers.storage.contracts import FolderUsage
from workers.store import JOB_ID, MERCHANT, TERMINAL, JobNotFound, JobRecord, JobStore

log = logging.getLogger(__name__)

JOBS_DELETED = Counter(
    "castwork_retention_jobs_deleted",
    "Jobs deleted (folder and record), by why: expired, quota, orphan.",
    ["why"],
    registry=REGISTRY,
)
BYTES_FREED = Counter(
    "castwork_retention_bytes_freed",
    "Bytes of job files deleted, by what: job (a whole folder) or uploads.",
    ["what"],
    registry=REGISTRY,
)
JOBS_STRANDED = Counter(
    "castwork_retention_jobs_stranded",
    "Jobs failed as stranded: queued or running past every stage's time limit and retries.",
    registry=REGISTRY,
)
ERRORS = Counter(
    "castwork_retention_errors",
    "Retention steps that failed (a folder that would not go, Redis down); retried next pass.",
    registry=REGISTRY,
)

_DAY_S = 86_400.0
# A folder with no record younger than this may be a submission between saving its uploads
# and creating its record.
ORPHAN_AFTER_S = 3600.0
# The most stages a job has: narrate, one render per format, finalize.
MAX_STAGES = 2 + len(ASPECTS)
# Waiting in the queue behind other jobs, on top of the stages' own time.
QUEUE_SLACK_S = 3600.0


class Action(enum.Enum):
    DELETE = "delete"  # the job's folder and record
    DROP_UPLOADS = "drop_uploads"  # uploads/ only
    FAIL_STRANDED = "fail_stranded"  # the record becomes failed; files stay until it expires


@dataclass(frozen=True)
class JobFiles:
    """One job as retention sees it: its record's state and its folder's size. A folder
    with no record has status "" and its modification time as ``created``/``updated``."""

    merchant: str
    id: str
    status: str
    created: float
    updated: float  # the record's last change: when it finished, for a finished job
    bytes: int = 0  # the whole folder
    upload_bytes: int = 0  # uploads/
    inputs_ready: bool = False  # work/job.json: prepare is done, the uploads are not read again

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Decision:
    action: Action
    job: JobFiles
    why: str  # expired, quota, orphan, inputs_ready, stranded

    @property
    def frees(self) -> int:
        if self.action is Action.DELETE:
            return self.job.bytes
        return self.job.upload_bytes if self.action is Action.DROP_UPLOADS else 0


@dataclass(frozen=True)
class Policy:
    keep_done_s: float
    keep_failed_s: float
    max_merchant_bytes: int
    # Every stage using every attempt up to its time limit, the longest backoff between
    # attempts, and an hour in the queue: past that no worker is going to finish the job.
    stranded_after_s: float
    orphan_after_s: float = ORPHAN_AFTER_S

    @classmethod
    def from_settings(cls, jobs: JobSettings) -> Policy:
        per_stage = (jobs.max_retries + 1) * jobs.time_limit_s
        per_stage += jobs.max_retries * jobs.max_backoff_ms / 1000
        return cls(
            keep_done_s=jobs.keep_days * _DAY_S,
            keep_failed_s=jobs.keep_failed_days * _DAY_S,
            max_merchant_bytes=jobs.max_merchant_mb << 20,
            stranded_after_s=MAX_STAGES * per_stage + QUEUE_SLACK_S,
        )


def plan(jobs: Iterable[JobFiles], policy: Policy, now: float) -> list[Decision]:
    """What one pass does to ``jobs`` at ``now``: each job on its own, then each merchant's
    quota over what is left."""
    decisions: list[Decision] = []
    left: dict[str, list[JobFiles]] = defaultdict(list)
    for job in jobs:
        decision = _decide(job, policy, now)
        if decision is not None:
            decisions.append(decision)
        if decision is None or decision.action is Action.FAIL_STRANDED:
            left[job.merchant].append(job)
        elif decision.action is Action.DROP_UPLOADS:
            left[job.merchant].append(
                replace(job, bytes=job.bytes - job.upload_bytes, upload_bytes=0)
            )
    for merchant_jobs in left.values():
        decisions += make_room(merchant_jobs, policy.max_merchant_bytes)
    return decisions


def _decide(job: JobFiles, policy: Policy, now: float) -> Decision | None:
    if not job.status:  # a folder with no record
        if now - job.updated > policy.orphan_after_s:
            return Decision(Action.DELETE, job, "orphan")
        return None
    if job.finished:
        keep = policy.keep_done_s if job.status == "done" else policy.keep_failed_s
        if now - job.updated > keep:
            return Decision(Action.DELETE, job, "expired")
    elif now - job.created > policy.stranded_after_s:
        return Decision(Action.FAIL_STRANDED, job, "stranded")
    if job.upload_bytes and (job.inputs_ready or job.status == "done"):
        return Decision(Action.DROP_UPLOADS, job, "inputs_ready")
    return None


def make_room(jobs: Sequence[JobFiles], limit_bytes: int) -> list[Decision]:
    """The finished jobs to delete, oldest first, so that one merchant's ``jobs`` fit in
    ``limit_bytes``; queued and running jobs are never chosen, so the result may not be
    enough."""
    excess = sum(j.bytes for j in jobs) - limit_bytes
    chosen: list[Decision] = []
    for job in sorted((j for j in jobs if j.finished), key=lambda j: j.created):
        if excess <= 0:
            break
        chosen.append(Decision(Action.DELETE, job, "quota"))
        excess -= job.bytes
    return chosen


class QuotaExceeded(CapacityError):
    """A new job does not fit in its merchant's storage, even without the finished jobs."""

    code = "storage_quota_exceeded"


@dataclass
class Report:
    """What a pass did."""

    deleted: Tally[str] = field(default_factory=Tally)  # by why
    uploads_dropped: int = 0
    stranded: int = 0
    bytes_freed: int = 0
    errors: int = 0

    def __bool__(self) -> bool:
        return bool(self.deleted or self.uploads_dropped or self.stranded or self.errors)

    def __str__(self) -> str:
        why = ", ".join(f"{n} {w}" for w, n in sorted(self.deleted.items()))
        return (
            f"{sum(self.deleted.values())} jobs deleted{f' ({why})' if why else ''}, "
            f"{self.uploads_dropped} uploads dropped, {self.stranded} stranded jobs failed, "
            f"{_mb(self.bytes_freed)} MB freed, {self.errors} errors"
        )


class Reaper:
    """Takes snapshots of the job folders and records, and carries out :func:`plan`."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        *,
        storage: JobStorage | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage or open_storage(settings)
        self.clock = clock
        self.policy = Policy.from_settings(settings.jobs)

    def run(self) -> Report:
        """One pass over every merchant."""
        report = self.carry_out(plan(self.snapshot(), self.policy, self.clock()))
        if report:
            log.info("retention: %s", report)
        return report

    def make_room(self, merchant: str, incoming_bytes: int) -> None:
        """Delete ``merchant``'s oldest finished jobs until ``incoming_bytes`` more fit in
        its quota. :class:`QuotaExceeded`, deleting nothing, when its queued and running jobs
        leave no room (or a deletion failed)."""
        limit = self.policy.max_merchant_bytes - incoming_bytes
        if self.storage.merchant_bytes(merchant) <= limit:
            return  # the common case, with no record read
        jobs = self.snapshot(merchant)
        used = sum(j.bytes for j in jobs)
        chosen = make_room(jobs, limit)
        if used - sum(d.frees for d in chosen) <= limit:
            used -= self.carry_out(chosen).bytes_freed
        if used > limit:
            mb = self.settings.jobs.max_merchant_mb
            raise QuotaExceeded(
                f"this job ({_mb(incoming_bytes)} MB) does not fit in the {mb} MB of storage "
                f"your jobs may use: {_mb(used)} MB are taken by jobs still queued or running; "
                "wait for one to finish"
            )

    def snapshot(self, merchant: str | None = None) -> list[JobFiles]:
        """Every job of ``merchant`` (default: all), from its record and its folder."""
        known = set(self.store.merchants())
        merchants = [merchant] if merchant else sorted(known | self.storage.merchants())
        jobs: list[JobFiles] = []
        # A name that is no merchant's ("..", a stray folder) never leads outside jobs_dir.
        for name in filter(MERCHANT.fullmatch, merchants):
            folders = {d: u for d, u in self.storage.folders(name).items() if JOB_ID.fullmatch(d)}
            for job_id in self.store.job_ids(name):
                try:
                    record = self.store.get(job_id)
                except JobNotFound:  # a list entry whose record is gone
                    self.store.delete(name, job_id)
                    continue
                jobs.append(_job_files(record, folders.pop(job_id, None)))
            for job_id, folder in folders.items():
                jobs.append(_orphan(name, job_id, folder))
        return jobs

    def carry_out(self, decisions: Iterable[Decision]) -> Report:
        report = Report()
        for decision in decisions:
            job = decision.job
            try:
                if not self._apply(decision):
                    continue
            except (OSError, StorageError) as exc:
                report.errors += 1
                ERRORS.inc()
                log.warning("retention: job %s: %s failed: %s", job.id, decision.action.value, exc)
                continue
            if decision.action is Action.DELETE:
                report.deleted[decision.why] += 1
                JOBS_DELETED.labels(decision.why).inc()
                BYTES_FREED.labels("job").inc(decision.frees)
            elif decision.action is Action.DROP_UPLOADS:
                report.uploads_dropped += 1
                BYTES_FREED.labels("uploads").inc(decision.frees)
            else:
                report.stranded += 1
                JOBS_STRANDED.inc()
            report.bytes_freed += decision.frees
        return report

    def _apply(self, decision: Decision) -> bool:
        """Carry ``decision`` out; False when there was nothing to do after all."""
        job = decision.job
        if decision.action is Action.DELETE:
            # The folder first: if it will not go, the record stays and the next pass retries.
            self.storage.remove(job.merchant, job.id)
            if job.status:
                self.store.delete(job.merchant, job.id)
            return True
        if decision.action is Action.DROP_UPLOADS:
            self.storage.remove(job.merchant, job.id, "uploads")
            return True
        # Refused when the job finished meanwhile.
        failed = self.store.fail(job.id, "stranded", _stranded_reason(job, self.policy))
        if failed:
            log.warning("retention: job %s failed as stranded (%s)", job.id, job.status)
        return failed


def _stranded_reason(job: JobFiles, policy: Policy) -> str:
    hours = policy.stranded_after_s / 3600
    return (
        f"stranded: still {job.status} {hours:.1f} h after it was submitted, longer than all "
        "its stages may take with their retries; no worker is going to finish it"
    )


def _job_files(record: JobRecord, folder: FolderUsage | None) -> JobFiles:
    files = JobFiles(record.merchant, record.id, record.status, record.created, record.updated)
    if folder is None:
        return files
    return replace(
        files,
        bytes=folder.bytes,
        upload_bytes=folder.upload_bytes,
        inputs_ready=folder.inputs_ready,
    )


def _orphan(merchant: str, job_id: str, folder: FolderUsage) -> JobFiles:
    at = folder.modified
    return JobFiles(merchant, job_id, "", at, at, bytes=folder.bytes)


def _mb(size: int) -> str:
    return f"{size / (1 << 20):.1f}"


class Housekeeping(dramatiq.Middleware):
    """A retention pass every ``jobs.reap_every_s`` in a worker process, the first at boot
    (catching up after downtime). A lock in Redis that outlives the pass lets one pass run
    per interval across all worker processes and machines."""

    def __init__(
        self, settings: Settings, store: JobStore, storage: JobStorage | None = None
    ) -> None:
        self.reaper = Reaper(settings, store, storage=storage)
        self.every_s = settings.jobs.reap_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="castwork-retention", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            self.run_once()
            if self._stop.wait(self.every_s):
                return

    def run_once(self) -> Report | None:
        """A pass, unless another process has had one within the interval."""
        # Scratch copies are this machine's own: every process sweeps them, no lock. A stage
        # runs no longer than its time limit, so an older copy's stage is gone.
        try:
            self.reaper.storage.sweep(self.reaper.settings.jobs.time_limit_s + 600)
        except OSError as exc:
            log.warning("scratch sweep failed: %s", exc)
        try:
            if not self.reaper.store.claim("retention", self.every_s * 0.9):
                return None
            return self.reaper.run()
        except REDIS_DOWN as exc:
            ERRORS.inc()
            log.warning("retention pass skipped: Redis does not answer (%s)", exc)
        except Exception:  # a bug must not end the loop: the next pass may go through
            ERRORS.inc()
            log.exception("retention pass failed")
        return None
