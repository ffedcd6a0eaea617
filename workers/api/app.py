"""The FastAPI app: middleware, handlers and routers put together."""

from __future__ import annotations

from collections.abc import Callable

import dramatiq
import redis
from fastapi import (
    FastAPI,
    Request,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from workers.actors import QUEUE
from workers.api import ops
from workers.api.auth import Keys, Links, keys_required, link_secret
from workers.api.copydesk import CopyDesk
from workers.api.deps import ApiContext, router
from workers.api.errors import (
    ApiError,
    on_api_error,
    on_http_error,
    on_redis_error,
    on_validation_error,
)
from workers.api.limits import RequestGate
from workers.api.routes import health_details
from workers.settings import Settings
from workers.storage import JobStorage, open_storage
from workers.store import JobStore


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
    storage: JobStorage | None = None,
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
    job_storage = storage or open_storage(settings)
    app.state.castwork = ApiContext(
        settings, store, broker, keys, links, job_storage, CopyDesk(settings)
    )
    app.add_middleware(
        RequestGate,
        keys=keys,
        max_request_mb=settings.api.max_request_mb,
        allowed_hosts=list(settings.api.allowed_hosts),
    )
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(redis.RedisError, on_redis_error)
    app.state.ops = ops.OpsContext.build(
        settings.turn_log_path,
        settings.api.ops_keys,
        # Merchant keys on loopback (say behind a reverse proxy) put keys in force too: the
        # operator endpoints are open only where the API itself is.
        keys_required=required or not keys.open,
        live_sessions=live_sessions,
        health=lambda: health_details(settings, store, job_storage.where),
    )
    app.add_exception_handler(ops.OpsDenied, _on_ops_denied)
    app.include_router(router)
    app.include_router(ops.router)
    app.mount("/static", StaticFiles(directory=ops.WEB_DIR), name="static")
    return app
