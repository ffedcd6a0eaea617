"""The merchant HTTP API for ad jobs, and the web page that drives it.

``create_app`` builds a FastAPI app over a :class:`~workers.store.JobStore` (job records in
Redis) and a dramatiq broker (where :func:`workers.jobs.submit` enqueues the first stage).
The API never renders anything itself: it validates, stores the uploads, enqueues, and
reports what the workers wrote into the job record.

Endpoints (all JSON except files and the page; the OpenAPI schema is at ``/openapi.json``)::

    POST /v1/jobs                      multipart: photos, optional logo, copy fields -> 201 job
    GET  /v1/jobs                      my jobs, newest first (limit, offset)
    GET  /v1/jobs/{id}                 status, stage, percent, error; outputs when done
    POST /v1/jobs/{id}/cancel          409 once the job has finished
    GET  /v1/jobs/{id}/files/{name}    one output file (names from workers.jobs.outputs)
    GET  /v1/templates                 the templates a job can name
    GET  /v1/config                    what the page needs: limits, whether a key is needed
    GET  /healthz                      ok or unavailable (details: /v1/ops/health, ops key)
    GET  /                             the web page (static files under /static/)

Choices worth knowing:

* **Auth.** ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` names the merchant
  (``api.keys`` maps merchant -> key; every key is compared with ``hmac.compare_digest``).
  With no keys configured the API is open, as merchant ``local``, and only when it binds to
  a loopback address (:func:`keys_required`); otherwise ``create_app`` refuses to start.
  A merchant's view is its own: another merchant's job id is a 404, word for word the same
  as an id that does not exist.
* **Other sites** (:mod:`base.access`). Without keys the API trusts that only this machine
  reaches it, so a web page must not reach it through the visitor's browser: it answers only
  loopback ``Host`` names (DNS rebinding sends the attacker's name), refuses a state-changing
  request whose ``Origin`` is not a loopback page, and wants the :data:`CSRF_HEADER` on
  those, which no cross-site form can send (nor a cross-site fetch: a custom header needs a
  CORS preflight, which this API never grants); the page sends it, and so must a script
  (``curl -H 'X-Castwork-CSRF: 1'``). With keys, the key header does that job; the
  ``Host`` must then be one of ``api.allowed_hosts`` and an ``Origin`` the API's own.
* **Download links** carry an expiring HMAC signature when keys are in force, because a
  ``<video src>`` or a plain link cannot send a header. The signing key is the server's
  link secret (``api.link_secret``, else ``<data_dir>/link-secret``) derived per merchant,
  never a merchant's API key, which would then sit one HMAC away from every link.
* **Request size.** A request whose ``Content-Length`` is over ``api.max_request_mb`` is
  refused before a byte is read; a body without one is counted as it streams and cut off at
  the same limit. Starlette spools file parts to disk past 1 MB, so at most one capped body
  reaches memory (the photos, when they are handed to ``submit``). Requests that carry a
  body are also authenticated before the body is read, so a stranger cannot make the server
  swallow 80 MB to learn that its key is wrong.
* **Uploads are checked by content** (:func:`media.images.sniff_format`), never by name or
  claimed type; per-file size is ``media.max_image_mb``.
* **Errors** have one shape: ``{"error": {"code", "message", "field"}}``; ``message`` names
  the field (the same words as :class:`media.errors.InputError` from ``submit``).

Endpoints that touch Redis or the disk are plain ``def``: FastAPI runs them in its thread
pool, so the event loop never waits on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import dramatiq
import redis
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    Query,
    Request,
    Response,
    Security,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, SecretStr
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from base.access import find_key, is_loopback, origin_allowed, page_csp, trusted_host
from base.errors import CapacityError, ConfigError
from media.errors import InputError
from media.images import safe_name, sniff_format
from media.templates import ASPECTS, Template, _bundled, load_templates
from workers import ops
from workers.actors import QUEUE
from workers.jobs import Upload, outputs, submit
from workers.settings import Settings
from workers.store import TERMINAL, IdempotencyConflict, JobNotFound, JobRecord, JobStore, Status

log = logging.getLogger(__name__)

LOCAL_MERCHANT = "local"
# What a 429 tells the client to wait: a render takes tens of seconds.
RETRY_AFTER_S = 30
# Signed download links live 6 to 7 hours: the expiry is rounded up to the hour so that a
# page polling a job gets the same URL each time (and the browser keeps its cached video).
_LINK_TTL_S = 6 * 3600
_LINK_ROUND_S = 3600
_MB = 1024 * 1024
# Job ids are JobStore.new_id(): lowercase hex. Anything else cannot exist.
_JOB_ID = re.compile(r"[0-9a-f]{8,64}")
# Printable ASCII without spaces: what clients send (UUIDs, ULIDs, random hex).
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_DIGITS = re.compile(r"[0-9]+")
_MEDIA_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}
# Methods that change something: what a page from another site must not be able to send.
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Without keys, a state-changing request must carry this header (any value): a form on
# another site cannot send one, and a fetch from there cannot without a CORS preflight.
CSRF_HEADER = "X-Castwork-CSRF"
LINK_SECRET_FILE = "link-secret"
_ACCEPTED = "JPEG, PNG, WebP or HEIC"
# The page is ours alone: no inline script, nothing from elsewhere.
_PAGE_CSP = page_csp(media=True, forms=True)


# --- Response models (they make /openapi.json say what the API really returns) ----------


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: bad_input, unauthorized, ...")
    message: str = Field(description="For people; names the field or file at fault")
    field: str | None = Field(default=None, description="The form field at fault, if one is")


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobError(BaseModel):
    code: str
    message: str


class JobOutput(BaseModel):
    format: str = Field(description="Aspect ratio: 9:16, 1:1 or 16:9")
    video_url: str
    thumbnail_url: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    bytes: int | None = None


class Job(BaseModel):
    id: str
    status: Status
    stage: str = Field(description="queued, narrate, render 9:16, finalize, done, ...")
    percent: float = Field(ge=0, le=100)
    template: str
    formats: list[str]
    created: float = Field(description="Unix time")
    updated: float = Field(description="Unix time")
    error: JobError | None = None
    fields: dict[str, str | None] = Field(description="headline, price, cta, store")
    outputs: list[JobOutput] = Field(default=[], description="One per format, once done")
    preview_url: str | None = None
    duration_s: float | None = None


class JobList(BaseModel):
    jobs: list[Job]
    limit: int
    offset: int


class TemplateInfo(BaseModel):
    id: str
    name: str
    description: str


class TemplateList(BaseModel):
    templates: list[TemplateInfo]


class ClientConfig(BaseModel):
    auth_required: bool
    max_images: int
    max_image_mb: int
    max_request_mb: int
    formats: list[str]
    languages: list[str]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]


# --- Errors -------------------------------------------------------------------------------


class ApiError(HTTPException):
    """An error response in the one shape. An HTTPException so that one raised while the body
    streams (the size cap) passes FastAPI's body parsing unchanged."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=dict(headers) if headers else None)
        self.code, self.message, self.field = code, message, field

    def response(self) -> JSONResponse:
        body = ErrorBody(error=ErrorDetail(code=self.code, message=self.message, field=self.field))
        return JSONResponse(body.model_dump(), status_code=self.status_code, headers=self.headers)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _not_found(job_id: str) -> ApiError:
    # One message for "missing" and "someone else's": the two must be indistinguishable.
    return ApiError(404, "not_found", f"no job {job_id!r}")


def _input_error(exc: InputError) -> ApiError:
    field = exc.fields.get("field")
    top = str(field).split(".")[0] if field else None  # "formats.0" -> the form field
    return ApiError(422, exc.code, str(exc), field=top)


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


# --- Auth ---------------------------------------------------------------------------------


def keys_required(settings: Settings) -> bool:
    """Whether the API must have keys: whenever it can be reached from another machine."""
    return not is_loopback(settings.api.host)


class Keys:
    """Merchant API keys: the one place that compares them."""

    def __init__(self, keys: Mapping[str, SecretStr], *, required: bool) -> None:
        if required and not keys:
            raise ConfigError(
                "api.keys [CASTWORK_API__KEYS]",
                "required when the API is reachable from other machines (api.host is not "
                "a loopback address)",
            )
        self._keys = {m: k.get_secret_value().encode() for m, k in keys.items()}

    @property
    def open(self) -> bool:
        """No keys configured (loopback only): everyone is the merchant "local"."""
        return not self._keys

    def has(self, merchant: str) -> bool:
        return merchant in self._keys

    def merchant_for(self, key: str) -> str | None:
        return find_key(key, self._keys)

    def authenticate(self, bearer: str | None, api_key: str | None) -> str | None:
        """The merchant for the presented key; None when no key was presented."""
        if self.open:
            return LOCAL_MERCHANT
        given = bearer or api_key
        if not given:
            return None
        merchant = self.merchant_for(given)
        if merchant is None:
            raise _unauthorized("the API key is not valid")
        return merchant


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Links:
    """Download URLs for a job's files: plain when the API is open, signed otherwise.

    The signing key is the link secret, derived per merchant (an HMAC of the merchant id), so
    that it holds nothing a merchant knows. A merchant whose key is withdrawn gets no link,
    and the links already handed out stop working with it."""

    def __init__(
        self, keys: Keys, secret: bytes | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys, self.secret, self.clock = keys, secret, clock

    def url(self, record: JobRecord, name: str) -> str:
        path = f"/v1/jobs/{record.id}/files/{name}"
        expires = math.ceil((self.clock() + _LINK_TTL_S) / _LINK_ROUND_S) * _LINK_ROUND_S
        signature = self._signature(record.merchant, record.id, name, expires)
        return f"{path}?expires={expires}&signature={signature}" if signature else path

    def valid(self, record: JobRecord, name: str, expires: int, signature: str) -> bool:
        expected = self._signature(record.merchant, record.id, name, expires)
        if expected is None or expires < self.clock():
            return False
        return hmac.compare_digest(expected.encode(), signature.encode())

    def _signature(self, merchant: str, job_id: str, name: str, expires: int) -> str | None:
        if self.secret is None or self.keys.open or not self.keys.has(merchant):
            return None
        key = hmac.new(self.secret, f"link/{merchant}".encode(), hashlib.sha256).digest()
        message = f"{job_id}/{name}/{expires}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()


def link_secret(settings: Settings) -> bytes:
    """``api.link_secret``; else the secret in ``<data_dir>/link-secret``, made (random,
    mode 0600) by the first server that needs it and kept for every restart after."""
    if settings.api.link_secret is not None:
        return settings.api.link_secret.get_secret_value().encode()
    path = settings.data_dir / LINK_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{LINK_SECRET_FILE}.")  # 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            # A hard link publishes the whole file at once and never replaces a secret that
            # another server made meanwhile (then its secret is the one read below).
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ConfigError(
            "api.link_secret",
            f"{path} holds no secret (under 32 characters); delete it to have a new one made",
        )
    return secret.encode()


# --- The request gate: auth before body, size cap, headers --------------------------------


class _BodyTooLarge(ApiError):
    def __init__(self, limit_mb: int) -> None:
        super().__init__(
            413,
            "request_too_large",
            f"the request is larger than the {limit_mb} MB limit; send fewer or smaller photos",
        )


class RequestGate:
    """Pure ASGI middleware: refuse what must be refused before the body is read.

    Starlette's multipart parser would otherwise take whatever a client sends; FastAPI
    parses the body before it resolves the auth dependency. First of all, a request from
    another site (see the module's docstring): starlette's TrustedHostMiddleware would do
    the Host part but cannot read ``[::1]:8000``, and answers in plain text.
    """

    def __init__(
        self, app: ASGIApp, *, keys: Keys, max_request_mb: int, allowed_hosts: list[str]
    ) -> None:
        self.app, self.keys, self.limit_mb = app, keys, max_request_mb
        self.max_bytes = max_request_mb * _MB
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal.response()(scope, receive, _with_headers(send))
            return
        await self.app(scope, self._capped(receive), _with_headers(send))

    def _refusal(self, scope: Scope) -> ApiError | None:
        pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(pairs)
        cross_site = self._cross_site(scope["method"], headers, pairs)
        if cross_site is not None:
            return cross_site
        if scope["method"] in ("POST", "PUT", "PATCH") and scope["path"].startswith("/v1/"):
            bearer, api_key = _bearer_token(headers.get("authorization")), headers.get("x-api-key")
            try:
                if self.keys.authenticate(bearer, api_key) is None:
                    return _unauthorized("an API key is required (Authorization: Bearer KEY)")
            except ApiError as exc:
                return exc
        declared = headers.get("content-length")
        if declared is not None:
            # ASCII digits only: str.isdigit() also passes "²", which int() refuses.
            if not _DIGITS.fullmatch(declared):
                return ApiError(400, "bad_request", "Content-Length is not a number")
            # int() refuses strings of over 4,300 digits; any length that long is too large.
            significant = declared.lstrip("0")
            if len(significant) > 18 or int(significant or "0") > self.max_bytes:
                return _BodyTooLarge(self.limit_mb)
        return None

    def _cross_site(
        self, method: str, headers: dict[str, str], pairs: list[tuple[str, str]]
    ) -> ApiError | None:
        """The refusal of a request from another site, if it is one."""
        keyless = self.keys.open
        hosts = [v for k, v in pairs if k == "host"]
        # Two Host headers: which one would a proxy have read? Neither is trusted.
        host = hosts[0] if len(hosts) == 1 else None
        if not trusted_host(host, loopback_only=keyless, allowed=self.allowed_hosts):
            where = (
                "without API keys the API answers only to localhost, 127.0.0.1 or [::1] "
                "(open it to the network with api.host and api.keys)"
                if keyless
                else "it is not one of api.allowed_hosts"
            )
            return ApiError(400, "untrusted_host", f"Host {_shown(host)} is refused: {where}")
        if method not in _UNSAFE_METHODS:
            return None
        origins = [v for k, v in pairs if k == "origin"]
        if origins and not (
            len(origins) == 1
            and origin_allowed(origins[0], host_header=host, loopback_only=keyless)
        ):
            mine = "a page on this machine" if keyless else "this API's own page"
            return ApiError(
                403,
                "cross_origin",
                f"a request from {_shown(origins[0])} is refused: only {mine} may change "
                "anything here",
            )
        if keyless and CSRF_HEADER.lower() not in headers:
            return ApiError(
                403,
                "csrf",
                f"the {CSRF_HEADER} header is missing: without API keys a request that "
                "changes something must carry it (any value), which a form on another site "
                "cannot send",
                field=CSRF_HEADER,
            )
        return None

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside body parsing; FastAPI re-raises HTTPExceptions as they are.
                    raise _BodyTooLarge(self.limit_mb)
            return message

        return capped


def _shown(value: str | None) -> str:
    # A header quoted back in an error: bounded, and never mistaken for the message itself.
    return "(none)" if value is None else repr(value[:100])


def _with_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            # no-referrer: a signed download link must not leak to another site.
            headers += [
                (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"no-referrer"),
            ]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


# --- Templates ----------------------------------------------------------------------------


def available_templates(settings: Settings) -> dict[str, Template]:
    """The bundled templates, and those of ``media.templates_dir`` (same id there wins)."""
    templates = dict(_bundled())
    extra = settings.media.templates_dir
    if extra is not None and extra.is_dir():
        templates.update(load_templates(extra))
    return templates


def _check_template(settings: Settings, template_id: str | None) -> None:
    # JobSpec takes any id; without this check a typo would fail the job in the worker.
    if template_id is None:
        return
    known = available_templates(settings)
    if template_id not in known:
        names = ", ".join(sorted(known)) or "none"
        raise InputError(
            f"template: unknown template {template_id!r} (known: {names})", field="template"
        )


# --- Uploads ------------------------------------------------------------------------------


def _read_upload(upload: UploadFile, label: str, field: str, max_mb: int) -> Upload:
    """The upload's bytes, after its size (413) and its real type (415) are checked."""
    name = safe_name(upload.filename or "upload")
    limit = max_mb * _MB
    too_big = ApiError(
        413, "file_too_large", f"{label} ({name}): larger than the {max_mb} MB limit", field=field
    )
    if upload.size is not None and upload.size > limit:
        raise too_big
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise too_big
    if sniff_format(data) is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"{label} ({name}): not an image; send {_ACCEPTED}",
            field=field,
        )
    return Upload(name, data)


def _formats(values: list[str] | None) -> list[str] | None:
    """Formats as a repeated field, comma-separated, or both."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _job_fields(**values: Any) -> dict[str, Any]:
    # Fields not sent are left out, so JobSpec's defaults apply (and its messages name them).
    return {k: v for k, v in values.items() if v is not None}


# --- Job views ----------------------------------------------------------------------------


def _job_view(record: JobRecord, ctx: ApiContext) -> Job:
    settings, links = ctx.settings, ctx.links
    public = record.public()
    view = Job.model_validate({**public, "fields": public["fields"] or {}})
    manifest = record.manifest
    if record.status != "done" or manifest is None:
        return view
    files = outputs(settings, record)  # the one source of the public names
    items = []
    for item in manifest.get("outputs", []):
        slug = str(item["format"]).replace(":", "x")
        video, thumb = f"{slug}.mp4", f"thumb-{slug}.jpg"
        if video not in files or thumb not in files:
            continue
        extra = {k: item.get(k) for k in ("width", "height", "fps", "duration_s", "bytes")}
        items.append(
            JobOutput(
                format=item["format"],
                video_url=links.url(record, video),
                thumbnail_url=links.url(record, thumb),
                **extra,
            )
        )
    preview = links.url(record, "preview.mp4") if "preview.mp4" in files else None
    return view.model_copy(
        update={"outputs": items, "preview_url": preview, "duration_s": manifest.get("duration_s")}
    )


def _own_job(store: JobStore, merchant: str, job_id: str) -> JobRecord:
    if not _JOB_ID.fullmatch(job_id):
        raise _not_found(job_id)
    try:
        return store.get_for(merchant, job_id)
    except JobNotFound:
        raise _not_found(job_id) from None


# --- Exception handlers -------------------------------------------------------------------


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _on_http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own (unknown route: 404, wrong method: 405) in the one shape.
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers).response()


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    # loc is ("body" | "query" | "header" | "path", name, ...): name the field itself.
    loc = [str(p) for p in first.get("loc", ())][1:]
    field = loc[0] if loc else None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}{more}"
    return ApiError(422, "bad_input", message, field=field).response()


async def _on_redis_error(request: Request, exc: Exception) -> Response:
    log.warning("job store unavailable during %s %s: %r", request.method, request.url.path, exc)
    return ApiError(
        503,
        "unavailable",
        "the job store is unavailable; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    ).response()


# --- Dependencies -------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiContext:
    """What the routes work with; one per app, kept in ``app.state.castwork``."""

    settings: Settings
    store: JobStore
    broker: dramatiq.Broker
    keys: Keys
    links: Links


async def _context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.castwork
    return ctx


Ctx = Annotated[ApiContext, Depends(_context)]
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key: KEY")


async def _presented(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> str | None:
    """The merchant of the presented key (401 if it is wrong); None when none was sent."""
    return ctx.keys.authenticate(credentials.credentials if credentials else None, api_key)


async def _merchant(who: Annotated[str | None, Depends(_presented)]) -> str:
    if who is None:
        raise _unauthorized("an API key is required (Authorization: Bearer KEY)")
    return who


Merchant = Annotated[str, Depends(_merchant)]
Presented = Annotated[str | None, Depends(_presented)]

router = APIRouter()


# --- Jobs ---------------------------------------------------------------------------------


@router.post(
    "/v1/jobs",
    status_code=201,
    response_model=Job,
    responses={
        200: {"model": Job, "description": "The job this Idempotency-Key already created"},
        429: {"model": ErrorBody, "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        # 400: a body that is not valid multipart (or a Content-Length that is not a number).
        # 403: from another site (see the module's docstring).
        **_error_responses(400, 401, 403, 413, 415, 422, 503),
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
    formats: Annotated[
        list[str] | None, Form(description="Repeat the field or comma-separate: 9:16, 1:1, 16:9")
    ] = None,
    captions: Annotated[bool | None, Form(description="Default true")] = None,
    music: Annotated[bool | None, Form(description="Default true")] = None,
    narration: Annotated[bool | None, Form(description="Voice-over; default true")] = None,
    logo: Annotated[UploadFile | None, File(description="Optional logo")] = None,
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
    if len(images) > media.max_images:
        raise ApiError(
            422,
            "bad_input",
            f"images: {len(images)} photos; at most {media.max_images}",
            field="images",
        )
    photos = [
        _read_upload(up, f"images[{i}]", "images", media.max_image_mb)
        for i, up in enumerate(images)
    ]
    logo_upload = _read_upload(logo, "logo", "logo", media.max_image_mb) if logo else None
    fields = _job_fields(
        template=template,
        headline=headline,
        price=price,
        cta=cta,
        description=description,
        store=store_name,
        language=language,
        formats=_formats(formats),
        captions=captions,
        music=music,
        narration=narration,
    )
    record, created = _submit(ctx, merchant, fields, photos, logo_upload, idempotency_key)
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


def _submit(
    ctx: ApiContext,
    merchant: str,
    fields: dict[str, Any],
    photos: list[Upload],
    logo: Upload | None,
    idempotency_key: str | None,
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
            logo,
            idempotency_key=idempotency_key,
        )
    except InputError as exc:
        raise _input_error(exc) from None
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
        raise _not_found(str(exc.args[0])) from None


@router.get(
    "/v1/jobs",
    response_model=JobList,
    responses=_error_responses(401, 422, 503),
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
    responses=_error_responses(401, 404, 503),
    summary="One job: status, progress, outputs",
)
def get_job(ctx: Ctx, merchant: Merchant, job_id: str) -> Job:
    return _job_view(_own_job(ctx.store, merchant, job_id), ctx)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=Job,
    responses=_error_responses(401, 403, 404, 409, 503),
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
        **_error_responses(401, 404, 503),
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
) -> FileResponse:
    record = _file_owner(ctx, job_id, name, who, expires, signature)
    path = outputs(ctx.settings, record).get(name)  # never a path from the client
    if path is None or not path.is_file():
        raise ApiError(404, "not_found", f"job {job_id!r} has no file {name!r}")
    return FileResponse(
        path,
        media_type=_MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
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
        raise _unauthorized("an API key or a signed URL is required")
    invalid = _unauthorized("the link is invalid or has expired; fetch the job again")
    if not _JOB_ID.fullmatch(job_id):
        raise invalid
    try:
        record = ctx.store.get(job_id)
    except JobNotFound:
        raise invalid from None  # the same answer: without its key a link reveals nothing
    if not ctx.links.valid(record, name, expires, signature):
        raise invalid
    return record


# --- Information --------------------------------------------------------------------------


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


def _health_details(settings: Settings, store: JobStore) -> dict[str, Any]:
    """What /v1/ops/health tells an operator: the Redis error, and where things are kept."""
    problem = _redis_problem(store)
    return {
        "status": "ok" if problem is None else "unavailable",
        "redis": problem or "ok",
        "data_dir": str(settings.data_dir),
        "jobs_dir": str(settings.jobs_dir),
        "turn_log": str(settings.turn_log_path),
    }


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return ops.page("index.html", _PAGE_CSP)


# --- The app ------------------------------------------------------------------------------


async def _on_ops_denied(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ops.OpsDenied)
    code = "unauthorized" if exc.status == 401 else "forbidden"
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return ApiError(exc.status, code, exc.message, headers=headers).response()


def create_app(
    settings: Settings,
    *,
    store: JobStore,
    broker: dramatiq.Broker,
    require_keys: bool | None = None,
    live_sessions: Callable[[], int | None] | None = None,
) -> FastAPI:
    """The API and its page. ``require_keys`` defaults to :func:`keys_required`; when keys
    are required and none are configured this raises :class:`ConfigError`: refuse to start
    rather than serve an open API to the network. ``live_sessions`` reports the voice
    sessions open now, for the dashboard (where the voice server runs in this process)."""
    required = keys_required(settings) if require_keys is None else require_keys
    keys = Keys(settings.api.keys, required=required)
    # Made (or read) only where links are signed: a keyless API leaves no secret behind.
    links = Links(keys, None if keys.open else link_secret(settings))
    app = FastAPI(
        title="Castwork ads API",
        version="1",
        description="Submit product photos and copy; get narrated ad videos in three formats.",
        # Operation ids are the function names: create_job, get_job, ...
        generate_unique_id_function=lambda route: route.name,
    )
    # A broker only enqueues to queues it knows (StubBroker raises, others declare lazily).
    broker.declare_queue(QUEUE)
    app.state.castwork = ApiContext(settings, store, broker, keys, links)
    app.add_middleware(
        RequestGate,
        keys=keys,
        max_request_mb=settings.api.max_request_mb,
        allowed_hosts=list(settings.api.allowed_hosts),
    )
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(HTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(redis.RedisError, _on_redis_error)
    app.state.ops = ops.OpsContext.build(
        settings.turn_log_path,
        settings.api.ops_keys,
        # Merchant keys on loopback (say behind a reverse proxy) put keys in force too: the
        # operator endpoints are open only where the API itself is.
        keys_required=required or not keys.open,
        live_sessions=live_sessions,
        health=lambda: _health_details(settings, store),
    )
    app.add_exception_handler(ops.OpsDenied, _on_ops_denied)
    app.include_router(router)
    app.include_router(ops.router)
    app.mount("/static", StaticFiles(directory=ops.WEB_DIR), name="static")
    return app
