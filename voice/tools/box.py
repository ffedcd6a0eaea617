"""All the server-side tools the operator configured, started once and found by name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from base.errors import ConfigError
from voice.engines.contracts import ToolSpec
from voice.errors import ToolError
from voice.settings import ToolSettings
from voice.tools.base import ServerTool
from voice.tools.http import HttpTool
from voice.tools.mcp import McpTools
from voice.tools.validate import validate

log = logging.getLogger(__name__)


class ToolBox:
    """The configured tools: HTTP tools and the tools of every MCP server that started.

    ``await ToolBox.start(settings.tools)`` once at start-up; ``specs()`` is what the model
    is offered; ``run(name, arguments_json)`` checks the arguments and calls; ``aclose()``
    stops the MCP servers. No name, URL or command ever comes from a client."""

    def __init__(self, http: Sequence[HttpTool] = (), mcp: Sequence[McpTools] = ()) -> None:
        self._http = list(http)
        self._mcp = list(mcp)
        self._tools: dict[str, ServerTool] = {}
        tools: list[ServerTool] = [*self._http, *(t for s in self._mcp for t in s.tools)]
        for tool in tools:
            if (first := self._tools.get(tool.spec.name)) is not None:
                raise ConfigError(
                    "tools",
                    f"two tools are named {tool.spec.name!r}: {_source(first)} and "
                    f"{_source(tool)}; rename one or leave it out (tools.mcp[].tools)",
                )
            self._tools[tool.spec.name] = tool

    @classmethod
    async def start(cls, settings: ToolSettings) -> ToolBox:
        """Start every configured source. An MCP server that cannot be started is logged and
        left out; two tools with one name raise :class:`ConfigError` (naming both)."""
        timeout_s, max_chars = settings.call_timeout_s, settings.max_output_chars
        http = [
            HttpTool(t, default_timeout_s=timeout_s, max_output_chars=max_chars)
            for t in settings.http
        ]
        starts = (
            McpTools.start(m, default_timeout_s=timeout_s, max_output_chars=max_chars)
            for m in settings.mcp
        )
        try:
            results = await asyncio.gather(*starts, return_exceptions=True)
        except BaseException:  # cancelled: each MCP server start stopped its own
            await _close(http, [])
            raise
        mcp: list[McpTools] = []
        for server, result in zip(settings.mcp, results, strict=True):
            if isinstance(result, McpTools):
                mcp.append(result)
            elif isinstance(result, ToolError):
                log.warning("mcp server %s left out: %s", server.label, result)
            else:
                await _close(http, mcp, results)
                raise result
        try:
            box = cls(http, mcp)
        except ConfigError:
            await _close(http, mcp)
            raise
        log.info("tools offered: %s", ", ".join(box.names()) or "none")
        return box

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """What the model is offered, in configuration order (HTTP tools, then MCP)."""
        return [tool.spec for tool in self._tools.values()]

    def get(self, name: str) -> ServerTool | None:
        return self._tools.get(name)

    async def run(self, name: str, arguments_json: str) -> str:
        """Check the model's arguments against the tool's schema, then call it: the output
        text. Raises :class:`ToolError` (an unknown name: permanent),
        :class:`~voice.errors.ToolArgumentsError` before any call,
        :class:`~voice.errors.ToolTimeout`."""
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(f"there is no tool named {name!r}", tool=name)
        return await tool.call(validate(tool.spec, arguments_json))

    async def aclose(self) -> None:
        await _close(self._http, self._mcp)


async def _close(
    http: Sequence[HttpTool],
    mcp: Sequence[McpTools],
    more: Sequence[object] = (),
) -> None:
    """Close what was started; ``more`` may hold the rest of a start that failed midway."""
    started = [*mcp, *(r for r in more if isinstance(r, McpTools) and r not in mcp)]
    await asyncio.gather(*(t.aclose() for t in http), *(s.aclose() for s in started))


def _source(tool: ServerTool) -> str:
    if isinstance(tool, HttpTool):
        return f"the http tool at {tool.server_label}"
    return f"MCP server {tool.server_label!r}"
