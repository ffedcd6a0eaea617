"""The voice agent's errors, under the one tree rooted in :mod:`base.errors`::

CastworkError
├── EngineError              a model call failed at run time (stage: vad/asr/llm/tts);
│                            a missed deadline is a recovery code, not an error (llm_first_token)
├── ToolError                a server-side tool call failed (stage "tool"; code tool_error)
│   ├── ToolTimeout          ... or did not answer in time (transient; tool_timeout)
│   └── ToolArgumentsError   the model's arguments were refused before any call
│                            (permanent; tool_invalid_arguments)
└── ProtocolError            a client sent something we refuse (permanent, per event)
"""

from __future__ import annotations

from typing import Any

from base.errors import CastworkError


class EngineError(CastworkError):
    """A model engine failed while serving a call."""

    code = "engine_error"

    def __init__(self, message: str, *, stage: str, **fields: Any) -> None:
        super().__init__(message, stage=stage, **fields)
        self.stage = stage


class ToolError(CastworkError):
    """A server-side tool (an HTTP tool, an MCP server's tool) failed. Not an EngineError:
    the model is fine, and its recovery (fall back to another model) does not apply. The
    message is short and safe to hand the model as the call's output; ``code`` is the
    reason the turn records (``tool_error``, ``tool_timeout``, ``tool_invalid_arguments``)."""

    code = "tool_error"

    def __init__(self, message: str, *, tool: str, transient: bool = False, **fields: Any) -> None:
        super().__init__(message, stage="tool", tool=tool, **fields)
        self.tool = tool
        self.transient = transient


class ToolTimeout(ToolError):
    code = "tool_timeout"

    def __init__(self, message: str, *, tool: str, **fields: Any) -> None:
        super().__init__(message, tool=tool, transient=True, **fields)


class ToolArgumentsError(ToolError):
    """The arguments are not JSON or break the tool's schema; nothing was called."""

    code = "tool_invalid_arguments"

    def __init__(self, message: str, *, tool: str, **fields: Any) -> None:
        super().__init__(message, tool=tool, transient=False, **fields)


class ProtocolError(CastworkError):
    """A client event is malformed or not allowed now. The session goes on."""

    code = "invalid_request_error"

    def __init__(self, message: str, *, code: str = "invalid_event", **fields: Any) -> None:
        super().__init__(message, **fields)
        self.code = code
