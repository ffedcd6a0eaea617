"""Tool calls within one response, as data: assembled from the model's pieces, run or handed
to the client, and turned into conversation items and chat messages. Pure: no I/O.

A call is *client-side* (a ``function`` tool the client defined: the client runs it and
answers with a ``function_call_output`` item) or *server-side* (an operator's HTTP or MCP tool
that Castwork runs itself, shown to the client as an ``mcp_call`` item).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from voice.core import protocol as p
from voice.core.conversation import NO_RESULT, Item, to_messages
from voice.engines.contracts import Message, ToolCallDelta, ToolSpec

Side = Literal["client", "server", "unknown"]


@dataclass
class CallRecord:
    """One tool call of a response, from the model's first piece to its result."""

    index: int  # within the model's answer (ToolCallDelta.index)
    round: int  # which model round of the response wrote it
    call_id: str
    name: str
    item_id: str
    side: Side
    server_label: str = ""
    arguments: str = ""
    output: str | None = None
    error: str | None = None  # the server call failed, or the arguments were refused
    # Where the call is: streaming -> called (arguments done; server: running) -> done.
    state: Literal["streaming", "called", "done"] = "streaming"
    output_index: int = -1  # in its response; -1 until shown to the client
    closed: bool = False  # its output_item.done was sent
    parsed: dict[str, Any] | None = None  # the arguments, once checked against the schema

    @property
    def answered(self) -> bool:
        return self.output is not None or self.error is not None

    def result_text(self) -> str:
        """What the model reads back for this call."""
        if self.error is not None:
            return f"Error: {self.error}"
        return self.output if self.output is not None else NO_RESULT

    def as_item(self) -> Item:
        """The conversation item the session keeps for this call. Calls the server answered
        itself (its own tools, and a client's call it refused) carry their result."""
        return Item(
            self.item_id,
            "assistant",
            "",
            kind="mcp_call" if self.side == "server" else "function_call",
            status="completed"
            if self.state != "streaming" and self.error is None
            else "incomplete",
            call_id=self.call_id,
            name=self.name,
            arguments=self.arguments,
            output=self.result_text() if self.answered else None,
            server_label=self.server_label,
        )

    def item(self, *, interrupted: bool = False) -> dict[str, Any]:
        """The conversation item a client sees for this call (``interrupted``: as the
        response was cut off before the call ended)."""
        if self.side == "server":
            cut = interrupted and not self.answered
            return p.mcp_call_item(
                self.item_id,
                server_label=self.server_label,
                name=self.name,
                arguments=self.arguments,
                output=self.output,
                error="interrupted by the caller" if cut else self.error,
            )
        whole = self.error is None and self.state != "streaming" and not interrupted
        return p.function_call_item(
            self.item_id,
            call_id=self.call_id,
            name=self.name,
            arguments=self.arguments,
            status="completed" if whole else "incomplete",
        )


@dataclass
class CallAssembler:
    """Collects a model round's :class:`ToolCallDelta` pieces into :class:`CallRecord` s."""

    round: int
    side_of: dict[str, tuple[Side, str]]  # name -> (side, server label)
    calls: dict[int, CallRecord] = field(default_factory=dict)

    def push(self, delta: ToolCallDelta) -> tuple[CallRecord, bool]:
        """Add a piece; returns its call and whether this piece opened it."""
        call = self.calls.get(delta.index)
        opened = call is None
        if call is None:
            name = delta.name or ""
            side, label = self.side_of.get(name, ("unknown", ""))
            call = CallRecord(
                index=delta.index,
                round=self.round,
                call_id=delta.call_id or p.new_id("call"),
                name=name,
                item_id=p.new_id("item"),
                side=side,
                server_label=label,
            )
            self.calls[delta.index] = call
        call.arguments += delta.arguments
        return call, opened


def chat_messages(calls: Sequence[CallRecord], text: str = "") -> list[Message]:
    """What the model reads in its next round: what it said, the calls it made, and each
    call's result (or why it was refused)."""
    said = [Item("said", "assistant", text)] if text else []
    return to_messages(said + [c.as_item() for c in calls])


def parse_arguments(arguments: str) -> dict[str, Any] | None:
    """The arguments as an object, or None when they are not a JSON object."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def offered(
    client: Iterable[ToolSpec], server: Iterable[ToolSpec], choice: str
) -> tuple[list[ToolSpec], str]:
    """The tools a round offers the model and the choice it gets. A client tool with a
    server tool's name is shadowed by the operator's: the server never runs a client's
    definition under an operator's name, and never hands an operator's tool to a client."""
    server = list(server)
    taken = {s.name for s in server}
    tools = server + [c for c in client if c.name not in taken]
    if choice == "none" or not tools:
        return [], "none"
    return tools, choice
