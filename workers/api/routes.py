"""The endpoints: jobs (submit, list, view, cancel, files) and information (templates,
config, health, the page)."""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import redis
from fastapi import (
    File,
    Form,
    Header,
    Query,
    Response,
    UploadFile,
)
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse

from base.access import page_csp
from base.errors import CapacityError
from media.brandkit.font import sniff_font
from media.brandkit.track import sniff_audio
from media.clips import sniff_video
from media.errors import InputError, StorageError
from media.folder import PREVIEW_FILE
from media.images import check_image_count, sniff_format
from media.templates import ASPECTS, CaptionStyle, Template, catalogue, get_template
from workers.api import ops
from workers.api.brand import FILES as BRAND_FILES
from workers.api.brand import BrandFile, saved_brand, saved_file
from workers.api.brand import limit_mb as brand_limit_mb
from workers.api.deps import ApiContext, Ctx, Merchant, Presented, router
from workers.api.errors import (
    RETRY_AFTER_S,
    ApiError,
    error_responses,
    input_error,
    not_found,
    unauthorized,
)
from workers.api.limits import read_capped
from workers.api.schemas import (
    Caption,
    Captions,
    CaptionWord,
    ClientConfig,
    ErrorBody,
    Health,
    Job,
    JobBrand,
    JobCopy,
    JobList,
    JobOutput,
    JobQuality,
    TemplateInfo,
    TemplateList,
    Webhook,
    WebhookAttempt,
    WebhookSecret,
)
from workers.jobs import Upload, outputs, submit
from workers.settings import Settings
from workers.storage.contracts import LocalFile, Redirect
from workers.store import TERMINAL, IdempotencyConflict, JobNotFound, JobRecord, JobStore
from workers.webhooks.delivery import deliveries, merchant_secret

log = logging.getLogger(__name__)

# Job ids are JobStore.new_id(): lowercase hex. Anything else cannot exist.
_JOB_ID = re.compile(r"[0-9a-f]{8,64}")
# Printable ASCII without spaces: what clients send (UUIDs, ULIDs, random hex).
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_MEDIA_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}
_ACCEPTED = "JPEG, PNG, WebP or HEIC"
# The page is ours alone: no inline script, nothing from elsewhere.
_PAGE_CSP = page_csp(media=True, forms=True)


def available_templates(settings: Settings) -> dict[str, Template]:
    return catalogue(settings.media.templates_dir)


def _check_template(settings: Settings, template_id: str | None) -> None:
    # JobSpec takes any id; without this check a typo would fail the job in the worker.
    if template_id is not None:
        get_template(template_id, settings.media.templates_dir)


def _read_upload(
    upload: UploadFile, label: str, field: str, max_mb: int, *, clip_mb: int | None = None
) -> Upload:
    """The upload's bytes, after its size (413) and its real type (415) are checked.
    ``clip_mb``: video clips are welcome too, up to that size (photos stay within max_mb)."""
    head = upload.file.read(1024)
    upload.file.seek(0)
    video = clip_mb is not None and sniff_video(head) is not None
    limit_mb = clip_mb if video and clip_mb is not None else max_mb
    up = read_capped(upload, label, field, limit_mb, unnamed="upload")
    if not video and sniff_format(up.data) is None:
        accepted = f"{_ACCEPTED}, or an MP4, MOV or WebM clip" if clip_mb else _ACCEPTED
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{label} ({up.name}): not an image; send {accepted}",
            field=field,
        )
    return up


def _formats(values: list[str] | None) -> list[str] | None:
    """Formats as a repeated field, comma-separated, or both."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _job_fields(**values: Any) -> dict[str, Any]:
    # Fields not sent are left out, so JobSpec's defaults apply (and its messages name them).
    return {k: v for k, v in values.items() if v is not None}


def _job_view(record: JobRecord, ctx: ApiContext) -> Job:
    links = ctx.links
    public = record.public()
    view = Job.model_validate({**public, "fields": public["fields"] or {}})
    if record.webhook_url:
        tried = [WebhookAttempt.model_validate(d) for d in deliveries(ctx.store, record.id)]
        view.webhook = Webhook(url=record.webhook_url, deliveries=tried)
    manifest = record.manifest
    if record.status != "done" or manifest is None:
        return view
    files = outputs(record)  # the one source of the public names
    items = []
    for item in manifest.outputs:
        if item.video_download not in files or item.thumbnail_download not in files:
            continue
        items.append(
            JobOutput(
                format=item.format,
                video_url=links.url(record, item.video_download),
                thumbnail_url=links.url(record, item.thumbnail_download),
                width=item.width,
                height=item.height,
                fps=item.fps,
                duration_s=item.duration_s,
                bytes=item.bytes,
            )
        )
    preview = links.url(record, PREVIEW_FILE) if PREVIEW_FILE in files else None
    captions = None
    if manifest.captions:
        captions = Captions(
            style=manifest.caption_style,
            items=[
                Caption(
                    text=c.text,
                    start=c.start,
                    end=c.end,
                    words=[CaptionWord(text=t, start=a, end=b) for t, a, b in c.words],
                )
                for c in manifest.captions
            ],
        )
    written = manifest.ad_copy
    return view.model_copy(
        update={
            "copy_": JobCopy.model_validate(written.model_dump()) if written else None,
            "quality": (
                JobQuality.model_validate(manifest.quality.model_dump())
                if manifest.quality
                else None
            ),
            "outputs": items,
            "preview_url": preview,
            "duration_s": manifest.duration_s,
            "captions": captions,
            "brand": JobBrand.model_validate(manifest.brand.model_dump())
            if manifest.brand
            else None,
        }
    )


def _own_job(store: JobStore, merchant: str, job_id: str) -> JobRecord:
    if not _JOB_ID.fullmatch(job_id):
        raise not_found(job_id)
    try:
        return store.get_for(merchant, job_id)
    except JobNotFound:
        raise not_found(job_id) from None


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=Job,
    responses={
        200: {"model": Job, "description": "The job this Idempotency-Key already created"},
        429: {"model": ErrorBody, "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        # 400: a body that is not valid multipart (or a Content-Length that is not a number).
        # 403: from another site (see :mod:`workers.api`).
        **error_responses(400, 401, 403, 413, 415, 422, 503),
    },
    summary="Submit an ad job",
)
def create_job(
    ctx: Ctx,
    response: Response,
    merchant: Merchant,
    images: Annotated[
        list[UploadFile], File(description="Product photos, 1 to media.max_images (8)")
    ],
    headline: Annotated[str, Form(description="1 to 80 characters")],
    template: Annotated[
        str | None, Form(description="An id from GET /v1/templates; default showcase")
    ] = None,
    price: Annotated[str | None, Form(description="Up to 24 characters")] = None,
    cta: Annotated[
        str | None, Form(description="Call to action, up to 40; default Shop now")
    ] = None,
    description: Annotated[str | None, Form(description="Up to 200 characters")] = None,
    store_name: Annotated[
        str | None, Form(alias="store", description="Up to 40 characters")
    ] = None,
    language: Annotated[Literal["auto", "en", "ko"] | None, Form()] = None,
    offer: Annotated[
        str | None, Form(description="A promotion AI copy may announce; up to 60")
    ] = None,
    narration_script: Annotated[
        str | None,
        Form(description="Read aloud instead of the template's narration (a picked draft)"),
    ] = None,
    brand_primary: Annotated[
        str | None, Form(description="#RRGGBB: this job's brand colours, with brand_accent")
    ] = None,
    brand_accent: Annotated[str | None, Form(description="#RRGGBB")] = None,
    brand: Annotated[
        bool | None, Form(description="false: the template's colours, not the kept brand")
    ] = None,
    write_copy: Annotated[
        bool | None,
        Form(
            description="The copywriter writes headline, subline, call to action and "
            "narration from the facts; the template's copy if it cannot (the job says so)"
        ),
    ] = None,
    formats: Annotated[
        list[str] | None, Form(description="Repeat the field or comma-separate: 9:16, 1:1, 16:9")
    ] = None,
    captions: Annotated[bool | None, Form(description="Default true")] = None,
    caption_style: Annotated[
        CaptionStyle | None,
        Form(
            description="phrase, karaoke (the spoken word lit) or pop (one word at a time); "
            "default: the template's"
        ),
    ] = None,
    music: Annotated[bool | None, Form(description="Default true")] = None,
    narration: Annotated[bool | None, Form(description="Voice-over; default true")] = None,
    logo: Annotated[
        UploadFile | None, File(description="Optional logo; default: the brand kit's")
    ] = None,
    font: Annotated[
        UploadFile | None,
        File(description="A TTF/OTF for every text; default: the brand kit's, else the house font"),
    ] = None,
    music_track: Annotated[
        UploadFile | None,
        File(
            description="Music under the narration (MP3, M4A, Ogg, FLAC, WAV); default: the "
            "brand kit's, else the template's"
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        Form(description="POSTed the job, signed (Standard Webhooks), when it ends"),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="A retry with the same key and request returns the same job (24 h)",
        ),
    ] = None,
) -> Job:
    media = ctx.settings.media
    _check_idempotency_key(idempotency_key)
    try:  # before any upload is read
        check_image_count(len(images), media.max_images)
    except InputError as exc:
        raise input_error(exc) from None
    photos = [
        _read_upload(up, f"images[{i}]", "images", media.max_image_mb, clip_mb=media.max_clip_mb)
        for i, up in enumerate(images)
    ]
    logo_upload = _read_upload(logo, "logo", "logo", media.max_image_mb) if logo else None
    own: list[tuple[BrandFile, UploadFile | None]] = [("font", font), ("music_track", music_track)]
    files: dict[str, Upload] = {
        name: _read_brand_file(up, name, ctx) for name, up in own if up is not None
    }
    fields = _job_fields(
        template=template,
        headline=headline,
        price=price,
        cta=cta,
        description=description,
        store=store_name,
        language=language,
        offer=offer,
        narration_script=narration_script,
        write_copy=write_copy,
        formats=_formats(formats),
        captions=captions,
        caption_style=caption_style,
        music=music,
        narration=narration,
    )
    if brand_primary or brand_accent:
        fields["brand"] = {"primary": brand_primary, "accent": brand_accent}
    elif brand is not False and (kept := saved_brand(ctx.store, merchant)) is not None:
        fields["brand"] = kept.model_dump()
    if logo_upload is not None:
        files["logo"] = logo_upload
    if brand is not False:  # the kit's files where the job sends none of its own
        for part in BRAND_FILES:
            if part not in files and (kit_file := saved_file(ctx.store, merchant, part)):
                files[part] = kit_file
    record, created = _submit(
        ctx, merchant, fields, photos, files, idempotency_key, webhook_url or None
    )
    if not created:
        response.status_code = 200
    return _job_view(record, ctx)


def _check_idempotency_key(key: str | None) -> None:
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            422,
            "bad_input",
            "Idempotency-Key: 1 to 255 printable ASCII characters, no spaces",
            field="Idempotency-Key",
        )


def _read_brand_file(upload: UploadFile, field: BrandFile, ctx: ApiContext) -> Upload:
    """A job's own font or music track: size here, the type by its first bytes (the rest of
    the checks run when the job prepares its inputs, as for clips)."""
    up = read_capped(upload, field, field, brand_limit_mb(ctx.settings, field))
    ok = sniff_font(up.data[:4]) if field == "font" else sniff_audio(up.data[:64]) is not None
    if not ok:
        what = "a TTF or OTF font" if field == "font" else "an MP3, M4A, Ogg, FLAC or WAV track"
        raise ApiError(
            415, "unsupported_media_type", f"{field} ({up.name}): not {what}", field=field
        )
    return up


def _submit(
    ctx: ApiContext,
    merchant: str,
    fields: dict[str, Any],
    photos: list[Upload],
    files: dict[str, Upload],
    idempotency_key: str | None,
    webhook_url: str | None = None,
) -> tuple[JobRecord, bool]:
    """:func:`workers.jobs.submit`, its errors turned into responses."""
    try:
        _check_template(ctx.settings, fields.get("template"))
        return submit(
            ctx.settings,
            ctx.store,
            ctx.broker,
            merchant,
            fields,
            photos,
            files=files,
            idempotency_key=idempotency_key,
            storage=ctx.storage,
            webhook_url=webhook_url,
        )
    except InputError as exc:
        raise input_error(exc) from None
    except StorageError as exc:
        raise _storage_down(exc) from None
    except IdempotencyConflict:
        raise ApiError(
            422,
            "idempotency_conflict",
            f"Idempotency-Key {idempotency_key!r} was already used for a different request; "
            "use a new key for a new job",
            field="Idempotency-Key",
        ) from None
    except CapacityError as exc:
        raise ApiError(
            429, exc.code, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    except JobNotFound as exc:  # the key's job expired while the key lives on
        raise not_found(str(exc.args[0])) from None


@router.get(
    "/v1/webhooks/secret",
    response_model=WebhookSecret,
    responses=error_responses(401, 503),
    summary="The secret that signs my webhooks (verify webhook-signature with it)",
)
def webhook_secret(ctx: Ctx, merchant: Merchant) -> WebhookSecret:
    return WebhookSecret(secret=merchant_secret(ctx.store, merchant))


@router.get(
    "/v1/jobs",
    response_model=JobList,
    responses=error_responses(401, 422, 503),
    summary="My jobs, newest first",
)
def list_jobs(
    ctx: Ctx,
    merchant: Merchant,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> JobList:
    records = ctx.store.list(merchant, limit=limit, offset=offset)
    return JobList(jobs=[_job_view(r, ctx) for r in records], limit=limit, offset=offset)


@router.get(
    "/v1/jobs/{job_id}",
    response_model=Job,
    responses=error_responses(401, 404, 503),
    summary="One job: status, progress, outputs",
)
def get_job(ctx: Ctx, merchant: Merchant, job_id: str) -> Job:
    return _job_view(_own_job(ctx.store, merchant, job_id), ctx)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=Job,
    responses=error_responses(401, 403, 404, 409, 503),
    summary="Cancel a queued or running job",
)
def cancel_job(ctx: Ctx, merchant: Merchant, job_id: str) -> Job:
    record = _own_job(ctx.store, merchant, job_id)
    # cancel() refuses a finished job atomically, so losing a race with a worker is safe.
    if record.status in TERMINAL or not ctx.store.cancel(job_id):
        status = ctx.store.status(job_id) or record.status
        raise ApiError(409, "job_finished", f"job {job_id!r} is already {status}")
    return _job_view(ctx.store.get(job_id), ctx)


@router.get(
    "/v1/jobs/{job_id}/files/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"video/mp4": {}, "image/jpeg": {}},
            "description": "The file (Range requests supported)",
        },
        **error_responses(401, 404, 503),
    },
    summary="Download one output file (API key, or the signed URL from the job)",
)
def get_file(
    ctx: Ctx,
    who: Presented,
    job_id: str,
    name: str,
    expires: Annotated[int | None, Query(description="Signed URL: expiry (Unix time)")] = None,
    signature: Annotated[str | None, Query(max_length=128)] = None,
    range_header: Annotated[str | None, Header(alias="Range", include_in_schema=False)] = None,
) -> Response:
    record = _file_owner(ctx, job_id, name, who, expires, signature)
    relative = outputs(record).get(name)  # never a path from the client
    try:
        found = (
            ctx.storage.download(record.merchant, record.id, relative, range_header)
            if relative
            else None
        )
    except StorageError as exc:
        raise _storage_down(exc) from None
    if found is None:
        raise ApiError(404, "not_found", f"job {job_id!r} has no file {name!r}")
    media_type = _MEDIA_TYPES.get(PurePosixPath(name).suffix, "application/octet-stream")
    cache = {"Cache-Control": "private, max-age=3600"}
    if isinstance(found, LocalFile):
        return FileResponse(found.path, media_type=media_type, headers=cache)
    if isinstance(found, Redirect):
        # The link's own expiry rules; no cache may keep the redirect longer.
        return RedirectResponse(found.url, status_code=307, headers={"Cache-Control": "no-store"})
    headers = {**cache, "Accept-Ranges": "bytes", "Content-Length": str(found.length)}
    if found.content_range:
        headers["Content-Range"] = found.content_range
    return StreamingResponse(
        found.chunks,
        status_code=206 if found.content_range else 200,
        media_type=media_type,
        headers=headers,
    )


def _storage_down(exc: StorageError) -> ApiError:
    # The job store's trouble, not the merchant's: try again later (an operator is told by
    # the log; the message names no key, host or secret).
    log.warning("job storage: %s", exc)
    return ApiError(
        503, exc.code, f"job files are out of reach now: {exc}", headers={"Retry-After": "30"}
    )


def _file_owner(
    ctx: ApiContext,
    job_id: str,
    name: str,
    who: str | None,
    expires: int | None,
    signature: str | None,
) -> JobRecord:
    """The job whose file is asked for: by the merchant's key, or by a signed URL."""
    if who is not None:
        return _own_job(ctx.store, who, job_id)
    if expires is None or signature is None:
        raise unauthorized("an API key or a signed URL is required")
    invalid = unauthorized("the link is invalid or has expired; fetch the job again")
    if not _JOB_ID.fullmatch(job_id):
        raise invalid
    try:
        record = ctx.store.get(job_id)
    except JobNotFound:
        raise invalid from None  # the same answer: without its key a link reveals nothing
    if not ctx.links.valid(record, name, expires, signature):
        raise invalid
    return record


@router.get("/v1/templates", response_model=TemplateList, summary="Ad templates")
def list_templates(ctx: Ctx) -> TemplateList:
    templates = sorted(available_templates(ctx.settings).values(), key=lambda t: t.id)
    infos = [TemplateInfo(id=t.id, name=t.name, description=t.description) for t in templates]
    return TemplateList(templates=infos)


@router.get("/v1/config", response_model=ClientConfig, summary="Limits; whether a key is needed")
async def client_config(ctx: Ctx) -> ClientConfig:
    return ClientConfig(
        auth_required=not ctx.keys.open,
        max_images=ctx.settings.media.max_images,
        max_image_mb=ctx.settings.media.max_image_mb,
        max_clip_mb=ctx.settings.media.max_clip_mb,
        max_font_mb=ctx.settings.media.max_font_mb,
        max_track_mb=ctx.settings.media.max_track_mb,
        max_request_mb=ctx.settings.api.max_request_mb,
        formats=list(ASPECTS),
        languages=["auto", "en", "ko"],
    )


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis does not answer"}},
    summary="Liveness and Redis (no details: those are at /v1/ops/health)",
)
def healthz(ctx: Ctx) -> JSONResponse:
    # Anyone may ask: the answer says ok or not, never why (an error names hosts, sockets).
    if _redis_problem(ctx.store) is not None:
        body = Health(status="unavailable", redis="unavailable")
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok", redis="ok").model_dump())


def _redis_problem(store: JobStore) -> str | None:
    """Why the job store's Redis does not answer; None when it does."""
    try:
        store.r.ping()
    except redis.RedisError as exc:
        log.warning("health check: Redis does not answer: %r", exc)
        return f"{type(exc).__name__}: {exc}"
    return None


def health_details(settings: Settings, store: JobStore, storage_where: str) -> dict[str, Any]:
    """What /v1/ops/health tells an operator: the Redis error, and where things are kept."""
    problem = _redis_problem(store)
    return {
        "status": "ok" if problem is None else "unavailable",
        "redis": problem or "ok",
        "data_dir": str(settings.data_dir),
        "jobs_dir": str(settings.jobs_dir),
        "storage": storage_where,
        "turn_log": str(settings.turn_log_path),
    }


@router.get("/talk", include_in_schema=False)
async def talk(ctx: Ctx) -> RedirectResponse:
    # The talk page lives with the voice server (same origin as its WebSocket and secrets).
    v = ctx.settings.voice
    host = "127.0.0.1" if v.host in ("0.0.0.0", "::") else v.host
    return RedirectResponse(f"http://{host}:{v.port}/talk", status_code=307)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return ops.page("index.html", _PAGE_CSP)
