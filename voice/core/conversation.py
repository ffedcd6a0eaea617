"""The conversation a session keeps, as the model will read it. Pure: no I/O.

Items are messages (user, assistant, system), tool calls the model made (``function_call``
for the client's tools, ``mcp_call`` for the operator's, which carry their own output) and the
client's ``function_call_output`` answers. Chat models want every call answered right after
the message that made it, whatever order the items came in, so :func:`to_messages` puts each
call's answer there, and a call nobody answered (the user spoke again first) reads as
:data:`NO_RESULT`: the model is never left waiting on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from voice.core import protocol as p
from voice.engines.contracts import Message, ToolCall

# What the model reads for a call whose result never came: the client sent no
# function_call_output before the user spoke again, or the caller interrupted the tool.
NO_RESULT = "No result: the caller spoke again before this call returned."
ItemKind = Literal["message", "function_call", "function_call_output", "mcp_call"]


@dataclass
class Item:
    id: str
    role: Literal["user", "assistant", "system"]
    text: str
    audio: bool = False
    status: str = "completed"
    # Assistant audio: (text piece, start ms, end ms) of what was sent, for truncation.
    segments: list[tuple[str, float, float]] = field(default_factory=list)
    kind: ItemKind = "message"
    # Tool calls and their outputs. A call answered here (a server tool's result, or why the
    # server refused a call) carries its ``output``; a client's comes as its own item.
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    output: str | None = None
    server_label: str = ""

    @property
    def size(self) -> int:
        """Characters the model reads for this item."""
        return len(self.text) + len(self.arguments) + len(self.output or "")

    @property
    def visible(self) -> bool:
        """Whether the model reads it at all (a message needs words; a call always counts)."""
        return self.kind != "message" or bool(self.text)

    def shown(self) -> dict[str, Any]:
        """The item as a client sees it."""
        if self.kind == "function_call":
            return p.function_call_item(
                self.id,
                call_id=self.call_id,
                name=self.name,
                arguments=self.arguments,
                status=self.status,
            )
        if self.kind == "function_call_output":
            return p.function_call_output_item(
                self.id, call_id=self.call_id, output=self.output or ""
            )
        if self.kind == "mcp_call":
            return p.mcp_call_item(
                self.id,
                server_label=self.server_label,
                name=self.name,
                arguments=self.arguments,
                output=self.output,
            )
        if self.role == "system":
            return p.system_item(self.id, self.text)
        if self.role == "user":
            return p.user_item(self.id, text=self.text)
        return p.assistant_item(self.id, transcript=self.text, audio=False, status=self.status)


def to_messages(items: Iterable[Item]) -> list[Message]:
    """Chat messages for ``items`` in order: consecutive calls in one assistant message, each
    followed by its answer (the client's output, the server call's result, or NO_RESULT)."""
    items = list(items)
    answers = {i.call_id: i.output or "" for i in items if i.kind == "function_call_output"}
    out: list[Message] = []
    group: list[Item] = []

    def flush() -> None:
        if not group:
            return
        calls: list[ToolCall] = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in group
        ]
        out.append({"role": "assistant", "content": "", "tool_calls": calls})
        for c in group:
            answer = c.output if c.output is not None else answers.get(c.call_id)
            out.append({"role": "tool", "content": answer or NO_RESULT, "tool_call_id": c.call_id})
        group.clear()

    for item in items:
        if item.kind in ("function_call", "mcp_call"):
            group.append(item)
            continue
        flush()
        if item.kind == "message" and item.text:
            out.append({"role": item.role, "content": item.text})
        # function_call_output items were placed after their call; one whose call the model
        # no longer sees is left out (a tool answer must follow its call).
    flush()
    return out
