"""OpenAI's shapes for the endpoints served: requests validated, responses and stream chunks
built. Only what Castwork serves; anything else in a request is ignored, as OpenAI does."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voice.engines.contracts import Message


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # A string, or content parts of which the text ones are read.
    content: str | list[dict[str, Any]] | None = None

    def as_message(self) -> Message:
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, list):
            text = " ".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        else:
            text = self.content or ""
        return {"role": role, "content": text}


class ChatRequest(_Loose):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32_768)
    temperature: float = Field(default=1.0, ge=0, le=2)
    tools: list[dict[str, Any]] | None = None

    def token_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class SpeechRequest(_Loose):
    model: str
    input: str = Field(min_length=1, max_length=4096)
    voice: str = ""
    # pcm: 24 kHz 16-bit little-endian mono, streamed as it is made (OpenAI's "pcm").
    response_format: Literal["pcm", "wav"] = "pcm"


def error(
    message: str, *, type_: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def completion(cid: str, model: str, text: str) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One server-sent event of a streamed completion."""
    body = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


DONE = b"data: [DONE]\n\n"
