"""The API's one error shape (``{"error": {code, message, field}}``) and the handlers that
put every failure into it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import (
    Request,
    Response,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from media.errors import InputError
from workers.api.schemas import ErrorBody, ErrorDetail

log = logging.getLogger(__name__)

# What a 429 tells the client to wait: a render takes tens of seconds.
RETRY_AFTER_S = 30


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


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def not_found(job_id: str) -> ApiError:
    # One message for "missing" and "someone else's": the two must be indistinguishable.
    return ApiError(404, "not_found", f"no job {job_id!r}")


def input_error(exc: InputError) -> ApiError:
    field = exc.fields.get("field")
    top = str(field).split(".")[0] if field else None  # "formats.0" -> the form field
    return ApiError(422, exc.code, str(exc), field=top)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in codes}


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def on_http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own (unknown route: 404, wrong method: 405) in the one shape.
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, code, str(exc.detail), headers=exc.headers).response()


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    # loc is ("body" | "query" | "header" | "path", name, ...): name the field itself.
    loc = [str(p) for p in first.get("loc", ())][1:]
    field = loc[0] if loc else None
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = f"{'.'.join(loc) or 'request'}: {first.get('msg', 'invalid')}{more}"
    return ApiError(422, "bad_input", message, field=field).response()


async def on_redis_error(request: Request, exc: Exception) -> Response:
    log.warning("job store unavailable during %s %s: %r", request.method, request.url.path, exc)
    return ApiError(
        503,
        "unavailable",
        "the job store is unavailable; try again shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    ).response()
