"""The contract of a tool that Castwork itself runs, and the bounds every call keeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from voice.engines.contracts import ToolSpec
from voice.errors import ToolTimeout


class ServerTool(Protocol):
    """A function the model may call that runs on this server (an HTTP endpoint, an MCP
    server's tool), configured by the operator: nothing a client sends chooses where."""

    @property
    def spec(self) -> ToolSpec:
        """What the model is offered: name, description, JSON Schema of the arguments."""
        ...

    @property
    def server_label(self) -> str:
        """Where it runs, for logs: an MCP server's label, an HTTP tool's origin."""
        ...

    @property
    def side_effects(self) -> bool:
        """Whether a call changes something (False: a pure look-up)."""
        ...

    @property
    def timeout_s(self) -> float: ...

    async def call(self, arguments: dict[str, Any]) -> str:
        """Run once with arguments already checked against ``spec.parameters``: the output
        text, at most the configured characters. Raises :class:`~voice.errors.ToolError`
        (:class:`~voice.errors.ToolTimeout` past ``timeout_s``)."""
        ...


async def bounded(tool: str, work: Awaitable[str], *, timeout_s: float, max_chars: int) -> str:
    """``work``'s output within ``timeout_s`` and ``max_chars``: the bounds of every call."""
    try:
        async with asyncio.timeout(timeout_s):
            output = await work
    except TimeoutError:
        raise ToolTimeout(f"{tool} did not answer within {timeout_s:g} s", tool=tool) from None
    return cap_output(output, max_chars)


def cap_output(text: str, max_chars: int) -> str:
    """At most ``max_chars`` of ``text``; a cut says so, so the model does not take the
    part for the whole."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]} [cut: {len(text) - max_chars} more characters]"
