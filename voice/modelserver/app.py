"""The OpenAI-compatible endpoints over Castwork's engines (any engine: embedded or fakes)::

    GET  /v1/models                  what is served
    POST /v1/chat/completions        the first configured LLM, streamed (SSE) or whole
    POST /v1/audio/transcriptions    multipart WAV -> {"text": ...} (json, text, verbose_json)
    POST /v1/audio/speech            {"input": ...} -> 24 kHz PCM16 streamed as made, or a WAV
    GET  /healthz                    liveness

With keys, every /v1 request needs ``Authorization: Bearer KEY``; without, only a loopback
address may be served (the command refuses otherwise). Model calls run off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException

from base.access import bearer_token, is_key, is_loopback
from base.errors import ConfigError
from voice import audio as pcm
from voice.engines.contracts import ChatModel, Synthesizer, ToolCallDelta, Transcriber
from voice.errors import EngineError
from voice.modelserver import wire
from voice.settings import VoiceSettings

log = logging.getLogger(__name__)

OUTPUT_RATE = 24_000  # OpenAI's pcm: 24 kHz, 16-bit little-endian, mono


@dataclass
class Served:
    """The engines behind the endpoints, by the model names clients use (any name the client
    sends is served by the one engine of its kind, as OpenAI-compatible local servers do)."""

    chat: ChatModel | None = None
    asr: Transcriber | None = None
    tts: Synthesizer | None = None
    max_tokens: int = 512
    max_audio_mb: int = 25

    def names(self) -> list[str]:
        return [e.name for e in (self.chat, self.asr, self.tts) if e is not None]


class ApiFailure(HTTPException):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error") -> None:
        super().__init__(status, message)
        self.type_ = type_


def create_app(served: Served, *, keys: Sequence[str] = ()) -> FastAPI:
    async def authorized(request: Request) -> None:
        if not keys or request.url.path == "/healthz":
            return
        if not is_key(bearer_token(request.headers.get("authorization")), keys):
            raise ApiFailure(401, "missing or unknown API key", type_="authentication_error")

    app = FastAPI(title="Castwork models", version="1", dependencies=[Depends(authorized)])

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        type_ = getattr(exc, "type_", "invalid_request_error")
        return JSONResponse(wire.error(str(exc.detail), type_=type_), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse(wire.error(f"{where}: {first.get('msg')}"), status_code=400)

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "owned_by": "castwork"} for n in served.names()],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: wire.ChatRequest) -> Response | dict[str, Any]:
        if served.chat is None:
            raise ApiFailure(404, "no chat model is served here")
        if body.tools:
            raise ApiFailure(400, "tools are not served by castwork models serve yet")
        messages = [m.as_message() for m in body.messages]
        limit = body.token_limit(served.max_tokens)
        pieces = _text(served.chat, messages, limit, body.temperature)
        cid = "chatcmpl-" + secrets.token_hex(12)
        if not body.stream:
            try:
                text = "".join([p async for p in pieces])
            except EngineError as exc:
                raise ApiFailure(500, f"the model failed: {exc}", type_="server_error") from None
            return wire.completion(cid, body.model, text)

        async def events() -> AsyncIterator[bytes]:
            yield wire.chunk(cid, body.model, {"role": "assistant", "content": ""})
            try:
                async for piece in pieces:
                    yield wire.chunk(cid, body.model, {"content": piece})
            except EngineError as exc:  # headers are gone: say it in the stream, then stop
                yield f"data: {wire.error(str(exc), type_='server_error')}\n\n".encode()
                return
            yield wire.chunk(cid, body.model, {}, finish="stop")
            yield wire.DONE

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/audio/transcriptions", response_model=None)
    async def transcriptions(
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()],
        language: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        prompt: Annotated[str | None, Form(max_length=2000)] = None,
    ) -> Response | dict[str, Any]:
        if served.asr is None:
            raise ApiFailure(404, "no transcription model is served here")
        if response_format not in ("json", "text", "verbose_json"):
            raise ApiFailure(
                400, f"response_format {response_format!r}: json, text or verbose_json"
            )
        limit = served.max_audio_mb << 20
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ApiFailure(413, f"file: larger than {served.max_audio_mb} MB")
        try:
            audio, rate = pcm.read_wav(data)
        except Exception as exc:  # wave.Error, EOFError, ValueError: whatever it is, not ours
            raise ApiFailure(400, f"file: not a 16-bit PCM WAV ({exc})") from None
        asr = served.asr
        try:
            result = await asyncio.to_thread(
                partial(asr.transcribe, pcm.resample(audio, rate, 16_000), prompt=prompt or None)
            )
        except EngineError as exc:
            raise ApiFailure(500, f"the model failed: {exc}", type_="server_error") from None
        if response_format == "text":
            return PlainTextResponse(result.text.strip())
        if response_format == "verbose_json":
            return {
                "task": "transcribe",
                "language": language or "",
                "duration": round(len(audio) / rate, 3),
                "text": result.text.strip(),
            }
        return {"text": result.text.strip()}

    @app.post("/v1/audio/speech", response_model=None)
    async def speech(body: wire.SpeechRequest) -> Response:
        if served.tts is None:
            raise ApiFailure(404, "no speech model is served here")
        tts = served.tts
        if body.response_format == "wav":
            audio = await asyncio.to_thread(lambda: pcm.concat(list(tts.synthesize(body.input))))
            wav = pcm.wav_bytes(pcm.resample(audio, tts.sample_rate, OUTPUT_RATE), OUTPUT_RATE)
            return Response(wav, media_type="audio/wav")
        return StreamingResponse(
            iterate_in_threadpool(_pcm24(tts, body.input)), media_type="audio/pcm"
        )

    return app


async def _text(
    chat: ChatModel, messages: list[Any], limit: int, temperature: float
) -> AsyncIterator[str]:
    async for piece in chat.stream(messages, max_tokens=limit, temperature=temperature):
        if not isinstance(piece, ToolCallDelta):
            yield piece


def _pcm24(tts: Synthesizer, text: str) -> Iterator[bytes]:
    """The synthesizer's chunks as 24 kHz PCM16, each as soon as it is made."""
    for chunk in tts.synthesize(text):
        yield pcm.encode(chunk, tts.sample_rate, "audio/pcm")


def serve(settings: VoiceSettings, *, host: str | None = None, port: int | None = None) -> None:
    """Load the configured ASR, first LLM and TTS, and serve them until SIGINT/SIGTERM."""
    import uvicorn

    from voice.engines.factory import build_asr, build_chat_chain, build_tts

    m = settings.model_server
    bind = host if host is not None else m.host
    keys = [k.get_secret_value() for k in m.api_keys]
    if not keys and not is_loopback(bind):
        raise ConfigError(
            "model_server.api_keys [CASTWORK_MODEL_SERVER__API_KEYS]",
            f"required when binding to {bind}",
        )
    served = Served(
        chat=build_chat_chain(settings)[0],
        asr=build_asr(settings),
        tts=build_tts(settings),
        max_tokens=m.max_tokens,
        max_audio_mb=m.max_audio_mb,
    )
    log.info("serving %s", ", ".join(served.names()))
    uvicorn.run(
        create_app(served, keys=keys),
        host=bind,
        port=port if port is not None else m.port,
        log_level="warning",
    )
