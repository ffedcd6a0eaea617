"""A local OpenAI-compatible chat server that misbehaves on command, for fault tests.

It serves ``POST /v1/chat/completions`` (streaming, server-sent events, as vLLM and the
llama.cpp server do) on loopback, and ``POST /_mode`` switches how the next requests go:

- ``ok``: streams ``reply`` word by word
- ``hang``: accepts the request and never answers (until the client gives up)
- ``hang_mid``: sends a few tokens (``tokens_before_fault`` events), then nothing more
- ``error``: HTTP ``status`` (500 by default) with an OpenAI-style error body
- ``close_mid``: a few tokens, then the connection is cut (an incomplete chunked body)
- ``garbage``: a 200 whose stream is not JSON
- ``slow``: the first token after ``delay_s``

``tool_calls`` (name, JSON arguments) follow the reply (which may be empty), streamed the
way vLLM streams them: the call's id and name in its first delta, the arguments split
over several (``arg_chunk`` characters each), then ``finish_reason: "tool_calls"``. Every
request's JSON body is kept in ``requests_seen``, for tests of what a request carried.
``script``, when set, picks the reply and tool calls per request from its body (a model
that calls a tool on one turn and reads the result on the next, for benchmarks).

Used by the reliability tests against the real :class:`voice.engines.llm.OpenAIChat` backend; also
handy by hand (``python -m voice.testing.fake_openai --port 8081 --mode hang``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

MODES = ("ok", "hang", "hang_mid", "error", "close_mid", "garbage", "slow")


@dataclass
class Behaviour:
    mode: str = "ok"
    reply: str = "Here is a real answer from the fake server."
    status: int = 500
    delay_s: float = 1.0
    tokens_before_fault: int = 3
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    arg_chunk: int = 7
    requests: int = 0
    modes_seen: list[str] = field(default_factory=list)
    requests_seen: list[dict[str, Any]] = field(default_factory=list)
    # request body -> (reply, tool calls), over ``reply`` and ``tool_calls``
    script: Callable[[dict[str, Any]], tuple[str, list[tuple[str, str]]]] | None = None


def _chunk(text: str | None, finish: str | None = None) -> bytes:
    return _event({"content": text} if text else {}, finish)


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _tool_call_events(calls: list[tuple[str, str]], arg_chunk: int) -> list[bytes]:
    """vLLM's shape: id, type and name first (no arguments), then argument pieces by index."""
    events = []
    for index, (name, arguments) in enumerate(calls):
        first = {"index": index, "id": f"call_fake{index}", "type": "function"}
        events.append(_event({"tool_calls": [{**first, "function": {"name": name}}]}))
        for at in range(0, len(arguments), arg_chunk):
            piece = {"index": index, "function": {"arguments": arguments[at : at + arg_chunk]}}
            events.append(_event({"tool_calls": [piece]}))
    return events


class _Cut(Exception):
    """Raised inside the body stream: the server drops the connection mid-response."""


def build_app(behaviour: Behaviour) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def answer_for(request: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
        if behaviour.script is not None:
            return behaviour.script(request)
        return behaviour.reply, behaviour.tool_calls

    async def events(
        reply: str, calls: list[tuple[str, str]], count: int | None = None
    ) -> AsyncIterator[bytes]:
        """The answer's events, words then tool calls; only the first ``count`` of them."""
        words = reply.split()
        answer = [_chunk(w if i == 0 else " " + w) for i, w in enumerate(words)]
        answer += _tool_call_events(calls, behaviour.arg_chunk)
        for event in answer[:count]:
            yield event
            await asyncio.sleep(0.01)

    async def completions(request: Request) -> Response:
        seen = json.loads(await request.body())
        behaviour.requests_seen.append(seen)
        reply, calls = answer_for(seen)
        behaviour.requests += 1
        mode = behaviour.mode
        behaviour.modes_seen.append(mode)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "error":
            return JSONResponse(
                {"error": {"message": "scripted failure", "type": "server_error", "code": None}},
                status_code=behaviour.status,
            )

        async def body() -> AsyncIterator[bytes]:
            if mode == "garbage":
                yield b"data: this is not json {\n\n"
                yield b"<html>502 Bad Gateway</html>\n\n"
                return
            if mode == "slow":
                await asyncio.sleep(behaviour.delay_s)
            n = behaviour.tokens_before_fault if mode in ("hang_mid", "close_mid") else None
            async for event in events(reply, calls, n):
                yield event
            if mode == "hang_mid":
                await asyncio.sleep(3600)
            if mode == "close_mid":
                raise _Cut("scripted connection cut")
            yield _chunk(None, "tool_calls" if calls else "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def set_mode(request: Request) -> Response:
        data = await request.json()
        if data.get("mode") not in MODES:
            return JSONResponse({"error": f"mode: one of {', '.join(MODES)}"}, status_code=400)
        for key in ("mode", "reply", "status", "delay_s", "tokens_before_fault", "tool_calls"):
            if key in data:
                setattr(behaviour, key, data[key])
        return JSONResponse({"mode": behaviour.mode})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/_mode", set_mode, methods=["POST"]),
        ]
    )


class FakeOpenAIServer:
    """The app under uvicorn in a thread, on a free loopback port: ``with FakeOpenAIServer()
    as fake: fake.behaviour.mode = "hang"; ... fake.url``."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        import uvicorn

        self.behaviour = behaviour or Behaviour()
        config = uvicorn.Config(
            build_app(self.behaviour),
            host="127.0.0.1",
            port=0,
            log_level="critical",
            log_config=None,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        sock = self._server.servers[0].sockets[0]
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # hung requests must not hold the shutdown
        self._thread.join(10)


def main() -> None:
    import argparse

    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--mode", choices=MODES, default="ok")
    args = ap.parse_args()
    uvicorn.run(build_app(Behaviour(mode=args.mode)), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
