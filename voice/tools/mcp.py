"""Tools of an MCP server, over stdio (a command Castwork starts) or streamable HTTP, through
the official MCP SDK.

The SDK's ``Client`` lives in anyio task groups, which only the task that entered them may
leave; so each connection has an owner task that opens it, holds it and closes it, and calls
from any task go through it. A server that died is noticed by the call it fails (a clear,
transient error: the call may or may not have run) and started again at once.

``mcp`` takes ~1.6 s to import, so it is imported inside the functions that use it: only a
configured MCP server pays for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from voice.engines.contracts import TOOL_NAME, ToolSpec, check_parameters
from voice.errors import ToolError
from voice.settings import McpServerSettings
from voice.tools.base import bounded, cap_output

if TYPE_CHECKING:
    from mcp import Client
    from mcp.client import Transport
    from mcp.client._transport import TransportStreams
    from mcp_types import CallToolResult, Tool

log = logging.getLogger(__name__)

# Pages of tools/list read at most: a server that pages forever cannot hang start-up.
_MAX_PAGES = 100
# A closing connection's time (stdio: the SDK closes stdin, then signals within ~4 s).
_CLOSE_S = 8.0
# An MCP error's text the model reads.
_MAX_ERROR = 500


class McpTool:
    """One tool of an MCP server, as a :class:`~voice.tools.ServerTool`."""

    def __init__(
        self,
        server: McpTools,
        spec: ToolSpec,
        *,
        side_effects: bool,
        timeout_s: float,
        max_output_chars: int,
    ) -> None:
        self.spec = spec
        self.server_label = server.label
        self.side_effects = side_effects
        self.timeout_s = timeout_s
        self._server = server
        self._max_chars = max_output_chars

    async def call(self, arguments: dict[str, Any]) -> str:
        return await bounded(
            self.spec.name,
            self._server.call_tool(self.spec.name, arguments),
            timeout_s=self.timeout_s,
            max_chars=self._max_chars,
        )


class McpTools:
    """One operator-configured MCP server: its connection and the tools it offers."""

    def __init__(
        self, settings: McpServerSettings, *, default_timeout_s: float, max_output_chars: int
    ) -> None:
        self.label = settings.label
        self.tools: list[McpTool] = []
        self._settings = settings
        self._timeout_s = settings.timeout_s or default_timeout_s
        self._max_chars = max_output_chars
        self._conn: _Connection | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def start(
        cls, settings: McpServerSettings, *, default_timeout_s: float, max_output_chars: int
    ) -> McpTools:
        """Connect and list the server's tools (those allowed). Raises :class:`ToolError`
        (its tool "*": the server as a whole) when it cannot be started or reached within
        ``connect_timeout_s``."""
        server = cls(
            settings, default_timeout_s=default_timeout_s, max_output_chars=max_output_chars
        )
        conn = server._connection()
        try:
            await conn.client()
        except BaseException as exc:
            await server.aclose()
            if not isinstance(exc, Exception):
                raise
            raise ToolError(
                f"MCP server {server.label!r} could not be started: {_reason(exc)}",
                tool="*",
                transient=True,
                server=server.label,
            ) from exc
        server.tools = server._offered(conn.listed)
        return server

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        """Call one of the server's tools; its text output. Unbounded: :class:`McpTool`
        keeps the time and size bounds."""
        import anyio
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED
        from pydantic import ValidationError

        if self._closed:
            raise self._error(f"the {self.label} tool server was stopped", name, transient=False)
        conn = self._connection()
        try:
            client = await conn.client()
        except Exception as exc:
            raise self._error(f"the {self.label} tool server is not available", name) from exc
        try:
            result = await client.call_tool(name, arguments)
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise self._error(f"{name} failed: {exc.message}", name, transient=False) from exc
            lost: Exception = exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            lost = exc
        except ValidationError as exc:
            raise self._error(f"{name} answered out of protocol", name, transient=False) from exc
        else:
            return _output(name, result, server=self.label)
        log.warning("mcp server %s: lost during %s (%r); restarting it", self.label, name, lost)
        self._drop(conn)
        if not self._closed:
            self._connection()  # now, not on the next call: a spawn takes seconds
        raise self._error(
            f"the {self.label} tool server stopped during the call; it may or may not have run",
            name,
        ) from lost

    async def aclose(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._drop(self._conn)
        await asyncio.gather(*list(self._closing))

    def _connection(self) -> _Connection:
        """The live connection, or a new one (no await in between: one per server)."""
        if self._conn is None or self._conn.ended:
            if self._conn is not None:
                self._drop(self._conn)
            self._conn = _Connection(self._settings)
        return self._conn

    def _drop(self, conn: _Connection) -> None:
        """Forget ``conn`` and close it in the background: a call does not wait for that."""
        if self._conn is conn:
            self._conn = None
        task = asyncio.create_task(conn.close(), name=f"mcp-close:{self.label}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _offered(self, listed: list[Tool]) -> list[McpTool]:
        settings, names = self._settings, {t.name for t in listed}
        for name in sorted(({*(settings.tools or ())} | settings.side_effects.keys()) - names):
            log.warning("mcp server %s does not offer %r (named in its settings)", self.label, name)
        return [tool for item in listed if (tool := self._tool(item)) is not None]

    def _tool(self, item: Tool) -> McpTool | None:
        settings = self._settings
        if settings.tools is not None and item.name not in settings.tools:
            return None
        if not re.match(TOOL_NAME, item.name):
            log.warning(
                "mcp server %s: tool %r left out: not a function name", self.label, item.name
            )
            return None
        try:
            check_parameters(item.input_schema)
        except ValueError as exc:
            log.warning("mcp server %s: tool %r left out: %s", self.label, item.name, exc)
            return None
        # MCP's default: a tool is not read-only unless it says so.
        read_only = item.annotations is not None and item.annotations.read_only_hint is True
        return McpTool(
            self,
            ToolSpec(item.name, item.description or "", item.input_schema),
            side_effects=settings.side_effects.get(item.name, not read_only),
            timeout_s=self._timeout_s,
            max_output_chars=self._max_chars,
        )

    def _error(self, message: str, tool: str, *, transient: bool = True) -> ToolError:
        return ToolError(
            cap_output(message, _MAX_ERROR), tool=tool, transient=transient, server=self.label
        )


class _Connection:
    """One MCP client session, opened, held and closed by its own task."""

    def __init__(self, settings: McpServerSettings) -> None:
        self.listed: list[Tool] = []
        self._settings = settings
        self._client: Client | None = None
        self._error: Exception | None = None
        self._opened = asyncio.Event()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"mcp:{settings.label}")

    @property
    def ended(self) -> bool:
        return self._task.done()

    async def client(self) -> Client:
        """The client once open; raises what kept it from opening, or ended it."""
        await self._opened.wait()
        if self._client is None:
            raise self._error or ConnectionError("the connection is closed")
        return self._client

    async def close(self) -> None:
        self._stop.set()
        if not self._opened.is_set():
            self._task.cancel()  # still opening: nothing to wind down
        done, _ = await asyncio.wait({self._task}, timeout=_CLOSE_S)
        if not done:
            log.warning("mcp server %s did not close in %g s", self._settings.label, _CLOSE_S)
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=_CLOSE_S)

    async def _run(self) -> None:
        from mcp import Client

        label = self._settings.label
        try:
            async with contextlib.AsyncExitStack() as stack:
                async with asyncio.timeout(self._settings.connect_timeout_s):
                    client = await stack.enter_async_context(Client(self._transport(), cache=None))
                    self.listed = await _list_tools(client)
                self._client = client
                self._opened.set()
                log.info("mcp server %s: connected, %d tools listed", label, len(self.listed))
                await self._stop.wait()
        except Exception as exc:
            self._error = exc
            if self._client is not None:
                log.warning("mcp server %s: the connection ended: %s", label, _reason(exc))
        finally:
            self._client = None
            self._opened.set()

    def _transport(self) -> Transport:
        settings = self._settings
        if settings.transport == "http":
            headers = {k: v.get_secret_value() for k, v in settings.headers.items()}
            return _streamable_http(str(settings.url), headers)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        command, *args = settings.command
        params = StdioServerParameters(
            command=command,
            args=args,
            env={k: v.get_secret_value() for k, v in settings.env.items()},
            cwd=settings.cwd,
        )
        # The server's stderr is the operator's to read, beside Castwork's own.
        return stdio_client(params, errlog=sys.stderr)


@contextlib.asynccontextmanager
async def _streamable_http(url: str, headers: dict[str, str]) -> AsyncIterator[TransportStreams]:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    # The SDK's own timeouts (a response stream may stay open for minutes), the configured
    # headers, and nothing from the environment (proxies, .netrc).
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout, trust_env=False) as http,
        streamable_http_client(url, http_client=http) as streams,
    ):
        yield streams


async def _list_tools(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _output(name: str, result: CallToolResult, *, server: str) -> str:
    """The text of a tool's result; an ``isError`` result raises with that text."""
    from mcp_types import EmbeddedResource, ResourceLink, TextContent, TextResourceContents

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource) and isinstance(
            block.resource, TextResourceContents
        ):
            parts.append(block.resource.text)
        elif isinstance(block, ResourceLink):
            parts.append(f"[{block.name}: {block.uri}]")
        else:
            parts.append(f"[{block.type} content left out]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if result.is_error:
        message = cap_output(text.strip() or f"{name} failed", _MAX_ERROR)
        raise ToolError(message, tool=name, server=server)
    return text


def _reason(exc: BaseException) -> str:
    """One line on why a connection failed (the first cause inside anyio's groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return cap_output(f"{type(exc).__name__}: {exc}", 300)
