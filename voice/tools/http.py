"""A tool served by a plain HTTP endpoint: the arguments POSTed as JSON, the body returned."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from base.redact import mask_url
from voice.engines.contracts import ToolSpec
from voice.errors import ToolError, ToolTimeout
from voice.settings import HttpToolSettings
from voice.tools.base import bounded

log = logging.getLogger(__name__)

# What of an error body goes into the error (the model reads it; the log keeps the same).
_EXCERPT = 200


class HttpTool:
    """One operator-configured endpoint. A call POSTs the arguments as a JSON object with
    the configured headers; a 2xx answer's body is the output. Redirects are not followed
    and the environment (proxies, .netrc) is not read: only the configured URL is called."""

    def __init__(
        self, settings: HttpToolSettings, *, default_timeout_s: float, max_output_chars: int
    ) -> None:
        url = settings.url
        self.spec = ToolSpec(settings.name, settings.description, settings.parameters)
        self.server_label = f"{url.scheme}://{url.host}:{url.port}"
        self.side_effects = settings.side_effects
        self.timeout_s = settings.timeout_s or default_timeout_s
        self._url = str(url)
        self._headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
        self._max_bytes = settings.max_response_bytes
        self._max_chars = max_output_chars
        self._client = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)

    async def call(self, arguments: dict[str, Any]) -> str:
        return await bounded(
            self.spec.name,
            self._post(arguments),
            timeout_s=self.timeout_s,
            max_chars=self._max_chars,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, arguments: dict[str, Any]) -> str:
        name = self.spec.name
        try:
            async with self._client.stream(
                "POST", self._url, json=arguments, headers=self._headers
            ) as response:
                body = await self._read(response)
        except httpx.TimeoutException:
            raise ToolTimeout(
                f"{name} did not answer within {self.timeout_s:g} s", tool=name
            ) from None
        except httpx.HTTPError as exc:
            log.warning("http tool %s at %s: %r", name, mask_url(self._url), exc)
            raise ToolError(f"{name} could not be reached", tool=name, transient=True) from exc
        text = _decode(body, response)
        status = response.status_code
        if response.is_success:
            return text
        log.warning("http tool %s answered %d: %.*s", name, status, _EXCERPT, text)
        # A 4xx body is usually the endpoint's word to the caller; a 5xx body is its
        # internals (a traceback), which the caller must not hear.
        said = f": {text[:_EXCERPT]}" if 400 <= status < 500 and text.strip() else ""
        raise ToolError(
            f"{name} failed with HTTP {status}{said}",
            tool=name,
            transient=status >= 500 or status == 429,
            status=status,
        )

    async def _read(self, response: httpx.Response) -> bytes:
        """The body, refused past max_response_bytes while it streams in (after decoding,
        so a compressed bomb is caught too)."""
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise self._too_big()
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self._max_bytes:
                raise self._too_big()
        return bytes(body)

    def _too_big(self) -> ToolError:
        name = self.spec.name
        return ToolError(f"{name} answered more than {self._max_bytes} bytes", tool=name)


def _decode(body: bytes, response: httpx.Response) -> str:
    try:
        return body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")
