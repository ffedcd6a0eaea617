"""The OpenAI Realtime wire protocol (GA event names): client events in, server events out.

Client events are parsed into pydantic models; anything malformed becomes a
:class:`ProtocolError` carrying the offending ``event_id``, so the session answers with an
``error`` event and goes on. Server events are plain dicts built here and nowhere else; a
conformance test validates each against the ``openai`` package's own models.
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from voice.engines.contracts import TOOL_NAME, check_parameters
from voice.errors import ProtocolError

AudioFormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    """Ids shaped like OpenAI's (``item_...``, ``resp_...``), unique within the process."""
    return f"{prefix}_{secrets.token_hex(6)}{next(_counter):04x}"


class _Model(BaseModel):
    # Unknown fields are ignored: clients written for newer API versions keep working.
    model_config = ConfigDict(extra="ignore")


# --- session configuration ------------------------------------------------------------------


class AudioFormat(_Model):
    type: AudioFormatType = "audio/pcm"
    rate: int | None = None


class TurnDetection(_Model):
    """``server_vad`` ends a turn after ``silence_duration_ms`` of silence. ``semantic_vad``
    asks early in each pause whether the speaker has finished (the end-of-turn model and the
    transcript so far, :mod:`voice.core.turntaking`) and waits up to an ``eagerness``-
    dependent limit when not. Both use the VAD's ``threshold`` and ``prefix_padding_ms`` to
    find speech. ``idle_timeout_ms``: silence after the agent's answer before it prompts the
    user (once; ``input_audio_buffer.timeout_triggered``)."""

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    prefix_padding_ms: Annotated[int, Field(ge=0, le=5000)] = 300
    silence_duration_ms: Annotated[int, Field(ge=100, le=10_000)] = 500
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: Annotated[int, Field(ge=5000, le=30_000)] | None = None

    def wire(self) -> dict[str, Any]:
        """As the session object shows it: each type with its own fields (as OpenAI's)."""
        own = (
            {"eagerness"}
            if self.type == "semantic_vad"
            else {"threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms"}
        )
        common = {"type", "create_response", "interrupt_response"}
        return self.model_dump(include=own | common)


class Transcription(_Model):
    model: str = "whisper"
    language: str | None = None
    prompt: str | None = None


class AudioInput(_Model):
    format: AudioFormat | None = None
    turn_detection: TurnDetection | None = None
    transcription: Transcription | None = None
    noise_reduction: dict[str, Any] | None = None


class AudioOutput(_Model):
    format: AudioFormat | None = None
    voice: str | None = None
    speed: Annotated[float, Field(ge=0.25, le=4.0)] | None = None


class AudioConfig(_Model):
    input: AudioInput | None = None
    output: AudioOutput | None = None


MAX_TOOLS = 128  # as OpenAI's function-calling limit
ToolName = Annotated[str, Field(pattern=TOOL_NAME)]


class FunctionTool(_Model):
    """A client-side tool: the model may call it, the client runs it and answers with a
    ``function_call_output`` item. (Server-side tools are the operator's, in settings: a client
    never names a server or URL for Castwork to call.)"""

    type: Literal["function"] = "function"
    name: ToolName
    description: Annotated[str, Field(max_length=4096)] = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("type", mode="before")
    @classmethod
    def _function_only(cls, v: object) -> object:
        if v == "mcp":
            raise ValueError(
                "MCP servers are the operator's to configure ([tools.mcp]); a client "
                "defines function tools only"
            )
        return v

    @field_validator("parameters")
    @classmethod
    def _is_a_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(v)) > 32_768:
            raise ValueError("schema larger than 32 KiB")
        return check_parameters(v)


class ToolChoiceFunction(_Model):
    type: Literal["function"]
    name: ToolName


ToolChoiceIn = Literal["auto", "none", "required"] | ToolChoiceFunction


def _unique_names(tools: list[FunctionTool] | None) -> list[FunctionTool] | None:
    names = [t.name for t in tools or []]
    if len(set(names)) != len(names):
        raise ValueError("tool names must be unique")
    return tools


class SessionPatch(_Model):
    """The ``session`` of a ``session.update``: only the fields present change."""

    type: Literal["realtime"] | None = None
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    audio: AudioConfig | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None

    _check_tools = field_validator("tools")(_unique_names)


# --- client events --------------------------------------------------------------------------


class ContentPart(_Model):
    type: Literal["input_text", "input_audio", "text", "output_text", "output_audio", "audio"]
    text: str | None = None
    audio: str | None = None
    transcript: str | None = None


class ItemIn(_Model):
    id: str | None = None
    type: Literal["message", "function_call", "function_call_output"] = "message"
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentPart] = []
    # function_call / function_call_output
    call_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    name: ToolName | None = None
    arguments: str | None = None
    output: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> ItemIn:
        need = {
            "message": ("role",),
            "function_call": ("call_id", "name"),
            "function_call_output": ("call_id", "output"),
        }[self.type]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.type} item needs {' and '.join(missing)}")
        return self


class _Event(_Model):
    event_id: str | None = None


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: SessionPatch


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ItemIn


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = 0
    audio_end_ms: Annotated[int, Field(ge=0)]


class ConversationItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ResponseParams(_Model):
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    conversation: str | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoiceIn | None = None

    _check_tools = field_validator("tools")(_unique_names)


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioBufferClear(_Event):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemTruncate
    | ConversationItemDelete
    | ResponseCreate
    | ResponseCancel
    | OutputAudioBufferClear,
    Field(discriminator="type"),
]
_CLIENT_EVENT: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = frozenset(
    m.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for m in (
        SessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ConversationItemCreate,
        ConversationItemTruncate,
        ConversationItemDelete,
        ResponseCreate,
        ResponseCancel,
        OutputAudioBufferClear,
    )
)


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """Parse one client message or raise ProtocolError (with the event_id when readable)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ProtocolError("message is nested too deeply", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ProtocolError("message must be a JSON object", code="invalid_event")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_EVENT_TYPES:
        raise ProtocolError(
            f"unsupported event type {kind!r}", code="unknown_event", event_id=event_id
        )
    try:
        return _CLIENT_EVENT.validate_python(data)
    except RecursionError:
        raise ProtocolError(
            f"{kind}: nested too deeply", code="invalid_value", event_id=event_id
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or kind
        raise ProtocolError(
            f"{kind}: {where}: {first['msg']}", code="invalid_value", event_id=event_id
        ) from None


# --- server events --------------------------------------------------------------------------


# Every server event Castwork sends, by name: mypy refuses a misspelt one at its call site
# (the tests check each event's shape against the openai package's models).
ServerEventType = Literal[
    "error",
    # Castwork's own, sent only to a client that asks (?castwork_turns=1 on the URL): each
    # turn's outcome and stage timings as the server measured them (the talk page shows them).
    "castwork.turn",
    "session.created",
    "session.updated",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.deleted",
    "conversation.item.truncated",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed",
    "input_audio_buffer.committed",
    "input_audio_buffer.cleared",
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.timeout_triggered",
    "output_audio_buffer.cleared",
    "response.created",
    "response.done",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.completed",
    "response.mcp_call.failed",
]


def event(type_: ServerEventType, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(exc: ProtocolError | Exception, *, event_id: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {
        "type": "invalid_request_error" if isinstance(exc, ProtocolError) else "server_error",
        "code": getattr(exc, "code", "server_error"),
        "message": str(exc),
    }
    offending = event_id or (exc.fields.get("event_id") if isinstance(exc, ProtocolError) else None)
    if offending:
        err["event_id"] = offending
    return event("error", error=err)


def user_item(
    item_id: str,
    *,
    text: str | None = None,
    transcript: str | None = None,
    audio: bool = False,
    status: str = "completed",
) -> dict[str, Any]:
    part: dict[str, Any] = (
        {"type": "input_audio", "transcript": transcript}
        if audio
        else {"type": "input_text", "text": text or ""}
    )
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": status,
        "content": [part],
    }


def assistant_item(item_id: str, *, transcript: str, audio: bool, status: str) -> dict[str, Any]:
    part = (
        {"type": "output_audio", "transcript": transcript}
        if audio
        else {"type": "output_text", "text": transcript}
    )
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part] if transcript or status == "completed" else [],
    }


def function_call_item(
    item_id: str, *, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_call_output_item(item_id: str, *, call_id: str, output: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }


def mcp_call_item(
    item_id: str,
    *,
    server_label: str,
    name: str,
    arguments: str,
    output: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A server-side tool call (an operator's MCP or HTTP tool), as the GA ``mcp_call`` item."""
    item: dict[str, Any] = {
        "id": item_id,
        "type": "mcp_call",
        "server_label": server_label,
        "name": name,
        "arguments": arguments,
        "output": output,
        "error": None,
    }
    if error is not None:
        item["error"] = {"type": "tool_execution_error", "message": error}
    return item


def system_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "system",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


def response_object(
    response_id: str,
    *,
    status: str,
    output: list[dict[str, Any]] | None = None,
    modalities: list[str],
    output_format: str,
    voice: str,
    max_output_tokens: int | str,
    status_details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    fmt: dict[str, Any] = {"type": output_format}
    if output_format == "audio/pcm":
        fmt["rate"] = 24_000
    resp: dict[str, Any] = {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": output or [],
        "output_modalities": modalities,
        "conversation_id": "conv_default",
        "audio": {"output": {"format": fmt, "voice": voice}},
        "max_output_tokens": max_output_tokens,
        "usage": usage,
    }
    return resp


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
        "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
    }
