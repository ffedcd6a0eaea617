"""A small Realtime client: streams audio like a microphone and collects what comes back.

Used by ``castwork talk``, ``bench/voice_latency.py`` and the tests. It speaks the same
protocol as any OpenAI Realtime client, so it also works against other servers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voice import audio as pcm

CHUNK_MS = 40


class SessionRefused(ConnectionError):
    """The server closed the connection before the session started (at capacity, bad key)."""

    def __init__(self, code: str | None, message: str, close_code: int | None) -> None:
        super().__init__(f"session refused ({code}, close {close_code}): {message}")
        self.code, self.message, self.close_code = code, message, close_code


@dataclass
class Received:
    event: dict[str, Any]
    at: float  # time.monotonic() on arrival


@dataclass
class RealtimeClient:
    ws: ClientConnection
    events: list[Received] = field(default_factory=list)
    input_format: str = "audio/pcm"
    output_format: str = "audio/pcm"

    @classmethod
    async def open(cls, url: str, *, api_key: str | None = None) -> RealtimeClient:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        ws = await connect(url, additional_headers=headers, max_size=None, compression=None)
        client = cls(ws)
        client._reader = asyncio.create_task(client._read())
        try:
            await client.wait_for("session.created")
        except ConnectionError:
            errors = [r.event["error"] for r in client.events if r.event["type"] == "error"]
            first = errors[0] if errors else {}
            raise SessionRefused(
                first.get("code"), first.get("message", "no reason given"), ws.close_code
            ) from None
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.events.append(Received(json.loads(raw), time.monotonic()))
                self._arrived.set()
        except ConnectionClosed:
            pass  # a close with an error code (1008, 1013...): ws.close_code says which
        finally:
            self._arrived.set()

    def __post_init__(self) -> None:
        self._arrived = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def add_agent_message(self, text: str) -> None:
        """Put words in the agent's mouth (``conversation.item.create``): what it said last."""
        item = {"type": "message", "role": "assistant"}
        content = [{"type": "output_text", "text": text}]
        await self.send({"type": "conversation.item.create", "item": {**item, "content": content}})

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)

    async def wait_for(
        self, type_: str, *, after: int = 0, timeout: float = 30.0, **match: Any
    ) -> dict[str, Any]:
        """The first event of ``type_`` (matching ``match`` fields) at index >= ``after``."""
        i = await self._wait(
            type_,
            lambda ev: all(ev.get(k) == v for k, v in match.items()),
            after,
            time.monotonic() + timeout,
            timeout,
        )
        return self.events[i].event

    async def wait_for_answer(self, *, after: int = 0, timeout: float = 30.0) -> dict[str, Any]:
        """The ``response.done`` of the response that answers the first user turn committed at
        index >= ``after``. A response from before that turn (one being cancelled, say) may
        still end after ``after``: the first ``response.done`` is not always this turn's."""
        deadline = time.monotonic() + timeout
        committed = await self._wait(
            "input_audio_buffer.committed", lambda ev: True, after, deadline, timeout
        )
        created = await self._wait(
            "response.created", lambda ev: True, committed, deadline, timeout
        )
        rid = self.events[created].event["response"]["id"]
        done = await self._wait(
            "response.done", lambda ev: ev["response"]["id"] == rid, created, deadline, timeout
        )
        return self.events[done].event

    async def _wait(
        self,
        type_: str,
        match: Callable[[dict[str, Any]], bool],
        after: int,
        deadline: float,
        timeout: float,
    ) -> int:
        """The index of the first event of ``type_`` at index >= ``after`` that ``match``es."""
        while True:
            for i in range(after, len(self.events)):
                ev = self.events[i].event
                if ev.get("type") == type_ and match(ev):
                    return i
            if self._reader is not None and self._reader.done():
                raise ConnectionError(f"connection closed before {type_}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"no {type_} within {timeout} s; got {[r.event['type'] for r in self.events]}"
                )
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                continue

    async def stream(self, samples: pcm.Float32Array, rate: int, *, realtime: bool = True) -> float:
        """Send audio in 40 ms chunks, paced like a microphone when ``realtime``.

        Returns the monotonic time at which the last chunk was sent."""
        data = pcm.encode(samples, rate, self.input_format)
        step = int(pcm.bytes_per_ms(self.input_format) * CHUNK_MS) // 2 * 2
        start = time.monotonic()
        sent_at = start
        n = 0
        for n, offset in enumerate(range(0, len(data), step), start=1):
            if realtime:
                await asyncio.sleep(max(0.0, start + (n - 1) * CHUNK_MS / 1000 - time.monotonic()))
            chunk = data[offset : offset + step]
            await self.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
            )
            sent_at = time.monotonic()
        if realtime:  # hold the pace across calls: a microphone cannot send the future early
            await asyncio.sleep(max(0.0, start + n * CHUNK_MS / 1000 - time.monotonic()))
        return sent_at

    @contextlib.asynccontextmanager
    async def silence(self, rate: int = 16_000) -> AsyncIterator[None]:
        """Send silence at real-time pace while the body runs, as an open microphone does."""
        chunk = np.zeros(int(rate * CHUNK_MS / 1000), dtype=np.float32)

        async def feed() -> None:
            while True:
                await self.stream(chunk, rate)

        feeder = asyncio.create_task(feed())
        try:
            yield
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    def types(self, after: int = 0) -> list[str]:
        return [r.event["type"] for r in self.events[after:]]

    def reply_audio(self, response_id: str | None = None) -> pcm.Float32Array:
        """The assistant audio received (for one response, or all), decoded to 16 kHz float32."""
        parts = [
            base64.b64decode(r.event["delta"])
            for r in self.events
            if r.event["type"] == "response.output_audio.delta"
            and (response_id is None or r.event["response_id"] == response_id)
        ]
        data = b"".join(parts)
        if not data:
            return np.zeros(0, dtype=np.float32)
        return pcm.decode(data, self.output_format)  # 16 kHz internal rate
