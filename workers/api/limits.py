"""The request gate: Host and Origin rules, auth before the body, the size cap, headers."""

from __future__ import annotations

import re

from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from base.access import CSRF_HEADER, bearer_token, origin_allowed, trusted_host
from media.images import safe_name
from workers.api.auth import Keys
from workers.api.errors import ApiError, unauthorized
from workers.jobs import Upload

MB = 1024 * 1024
_DIGITS = re.compile(r"[0-9]+")
# Methods that change something: what a page from another site must not be able to send.
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Without keys, a state-changing request must carry CSRF_HEADER (any value; base.access).


def read_capped(
    upload: UploadFile, label: str, field: str, limit_mb: int, *, unnamed: str | None = None
) -> Upload:
    """An uploaded file's bytes (its name made safe; ``unnamed``, else ``field``, without
    one), or 413 past ``limit_mb``: the declared size is checked first, then at most one byte
    past the limit is ever read."""
    name = safe_name(upload.filename or unnamed or field)
    limit = limit_mb * MB
    if upload.size is None or upload.size <= limit:
        data = upload.file.read(limit + 1)
        if len(data) <= limit:
            return Upload(name, data)
    raise ApiError(
        413, "file_too_large", f"{label} ({name}): larger than the {limit_mb} MB limit", field=field
    )


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
    another site (see :mod:`workers.api`): starlette's TrustedHostMiddleware would do
    the Host part but cannot read ``[::1]:8000``, and answers in plain text.
    """

    def __init__(
        self, app: ASGIApp, *, keys: Keys, max_request_mb: int, allowed_hosts: list[str]
    ) -> None:
        self.app, self.keys, self.limit_mb = app, keys, max_request_mb
        self.max_bytes = max_request_mb * MB
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
            bearer, api_key = (
                bearer_token(headers.get("authorization")) or None,
                headers.get("x-api-key"),
            )
            try:
                if self.keys.authenticate(bearer, api_key) is None:
                    return unauthorized("an API key is required (Authorization: Bearer KEY)")
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
