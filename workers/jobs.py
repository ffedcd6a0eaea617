"""Submitting and managing ad jobs: what the HTTP API (and tests) call.

``submit`` validates the fields first (nothing is stored for a request that cannot work),
makes room in the merchant's storage quota (or refuses the job), stores the uploads in the
job folder, creates the record, then enqueues the first actor. An Idempotency-Key makes a
retried request return the job the first one created.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
from pydantic import ValidationError

from base.errors import CapacityError
from media.folder import JobPaths
from media.images import check_image_count, safe_name
from media.job import JobSpec, job_error
from workers.actors import NARRATE, enqueue
from workers.retention import Reaper
from workers.settings import Settings
from workers.storage import JobStorage, open_storage
from workers.store import JobRecord, JobStore
from workers.webhooks.targets import check_url


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


# The spec's fields that take one uploaded file each (JobSpec paths), beside the photos.
FILE_FIELDS = ("logo", "font", "music_track")


def request_hash(
    fields: dict[str, Any], images: list[Upload], files: Mapping[str, Upload], webhook_url: str = ""
) -> str:
    """Fingerprint of a request, to tell a retry from a different request under one key."""
    h = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    h.update(webhook_url.encode())
    for up in images:
        h.update(hashlib.sha256(up.data).digest())
    for name in sorted(files):
        h.update(name.encode() + hashlib.sha256(files[name].data).digest())
    return h.hexdigest()


def _validate(fields: dict[str, Any], n_images: int) -> JobSpec:
    # Placeholder paths: the real ones exist only once the uploads are saved.
    try:
        return JobSpec.model_validate(
            {**fields, "images": [Path(f"/upload/{i}") for i in range(n_images)]}
        )
    except ValidationError as exc:
        raise job_error(exc) from None


def submit(
    settings: Settings,
    store: JobStore,
    broker: dramatiq.Broker,
    merchant: str,
    fields: dict[str, Any],
    images: list[Upload],
    logo: Upload | None = None,
    *,
    files: Mapping[str, Upload] | None = None,
    idempotency_key: str | None = None,
    storage: JobStorage | None = None,
    webhook_url: str | None = None,
) -> tuple[JobRecord, bool]:
    """Create and enqueue a job; return (record, created). Raises InputError / CapacityError
    (too many active jobs, or :class:`workers.retention.QuotaExceeded`); a StorageError when
    the uploads cannot be kept. ``files``: uploads for the spec's other file fields
    (:data:`FILE_FIELDS`: font, music_track). ``storage``: where the job's files go (default: as
    ``storage.url`` says); ``webhook_url``: announced there when the job ends (checked:
    :class:`~workers.webhooks.targets.WebhookRefused`)."""
    storage = storage or open_storage(settings)
    attached = {**(files or {}), **({"logo": logo} if logo else {})}
    if unknown := set(attached) - set(FILE_FIELDS):
        raise ValueError(f"not file fields of a job: {sorted(unknown)}")
    if webhook_url:
        check_url(webhook_url, allow_private=settings.webhooks.allow_private)
    check_image_count(len(images), settings.media.max_images)
    _validate(fields, len(images))
    job_id = store.new_id()
    if idempotency_key:
        known = store.reserve_idempotency(
            merchant,
            idempotency_key,
            request_hash(fields, images, attached, webhook_url or ""),
            job_id,
        )
        if known is not None:
            return store.get_for(merchant, known), False
    try:
        if store.active_count(merchant) >= settings.api.max_active_jobs:
            raise CapacityError(
                f"{settings.api.max_active_jobs} jobs are already queued or running; "
                "wait for one to finish"
            )
        incoming = sum(len(up.data) for up in [*images, *attached.values()])
        Reaper(settings, store, storage=storage).make_room(merchant, incoming)
        # Kept (uploaded, on an object store) before the record exists: a worker that takes
        # the message finds the files. A failure in between leaves an orphan for retention.
        with storage.workspace(merchant, job_id) as ws:
            spec = _save(ws.paths, fields, images, attached)
        record = store.create(
            job_id,
            merchant,
            template=spec.template,
            formats=list(spec.formats),
            fields={k: fields.get(k) for k in ("headline", "price", "cta", "store")},
            webhook_url=webhook_url,
        )
    except Exception:
        if idempotency_key:
            store.release_idempotency(merchant, idempotency_key)
        raise
    try:
        enqueue(broker, NARRATE, job_id)
    except Exception as exc:
        # Never leave a job "queued" that no message will ever pick up.
        store.fail(job_id, "enqueue_failed", f"could not queue the job: {exc}")
        if idempotency_key:
            store.release_idempotency(merchant, idempotency_key)
        raise
    return record, True


def _save(
    paths: JobPaths, fields: dict[str, Any], images: list[Upload], files: Mapping[str, Upload]
) -> JobSpec:
    paths.make()
    saved: list[Path] = []
    for i, up in enumerate(images):
        # The index keeps two uploads called "photo.jpg" apart.
        target = paths.uploads / f"{i:02d}-{safe_name(up.name)}"
        target.write_bytes(up.data)
        saved.append(target)
    named: dict[str, Path] = {}
    for field, up in files.items():
        named[field] = paths.uploads / f"{field}-{safe_name(up.name)}"
        named[field].write_bytes(up.data)
    try:
        spec = JobSpec.model_validate({**fields, "images": saved, **named})
    except ValidationError as exc:
        shutil.rmtree(paths.root, ignore_errors=True)
        raise job_error(exc) from None
    # The spec as submitted; prepare() writes job.json with the normalized inputs.
    paths.write_spec(paths.request_file, spec)
    return spec


def outputs(record: JobRecord) -> dict[str, str]:
    """Downloadable files of a finished job: public name -> name in the job's folder
    (``out/...``, for :meth:`~workers.storage.JobStorage.download`)."""
    if record.manifest is None:
        return {}
    return {name: f"out/{file}" for name, file in record.manifest.downloads().items()}
