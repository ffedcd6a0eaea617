"""A voice server on a free loopback port with scripted engines: what the tests and the
benches of an application built on Castwork drive, as dramatiq ships its stub broker::

    async with running_server(tmp_path, fake_engines()) as (url, turn_log, settings):
        client = await RealtimeClient.open(url)
        await client.stream(utterance(), 16_000, realtime=False)
        done = await client.wait_for_answer()
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from base.settings import load
from voice.learning.cases import CaseRecorder
from voice.runtime.latency import TurnLog
from voice.runtime.server import VoiceServer
from voice.runtime.turns import Engines, Runtime, TurnPolicy
from voice.settings import VoiceSettings
from voice.testing.fakes import EnergyVad, FakeChat, FakeSynthesizer, FakeTranscriber, silence, tone


def fake_engines(**overrides: Any) -> Engines:
    """Scripted engines (a fixed transcript, a fixed reply, a tone for speech); any of them
    replaced by ``overrides`` (``asr=``, ``chat=[...]``, ``tts=``, ...)."""
    values: dict[str, Any] = {
        "asr": FakeTranscriber(texts=["what time is it"]),
        "chat": [FakeChat()],
        "tts": FakeSynthesizer(),
        "tts_fallback": FakeSynthesizer(name="fake-fallback"),
        "apology": (tone(500), 16_000),
    }
    values.update(overrides)
    return Engines(**values)


def utterance(speech_ms: float = 800, pause_ms: float = 900) -> np.ndarray:
    """A turn as a microphone sends it: a little silence, a tone, then a pause that ends it."""
    return np.concatenate([silence(200), tone(speech_ms), silence(pause_ms)])


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path,
    engines: Engines,
    *,
    policy: TurnPolicy | None = None,
    runtimes: Sequence[Runtime] = (),
    cases: CaseRecorder | None = None,
    languages: Callable[[Runtime, str], Runtime] | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[VoiceServer, int]]:
    """A server with ``engines`` (energy VAD) and ``settings`` overrides on a free loopback
    port, its turn log in ``tmp_path/turns.jsonl``; yields the server and its port."""
    s = load(VoiceSettings, data_dir=tmp_path, **settings)
    log = TurnLog(tmp_path / "turns.jsonl")
    server = VoiceServer(
        s,
        engines,
        EnergyVad(),
        policy=policy or TurnPolicy(lead_ms=200),
        turn_log=log,
        runtimes=runtimes,
        cases=cases,
        languages=languages,
    )
    srv = await server.start("127.0.0.1", 0)
    try:
        yield server, next(iter(srv.sockets)).getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()
        await server.client_secrets.aclose()
        log.close()


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path, engines: Engines, **options: Any
) -> AsyncIterator[tuple[str, TurnLog, VoiceSettings]]:
    """:func:`serving`, seen by a client: yields the WebSocket URL, the turn log and the
    settings."""
    async with serving(tmp_path, engines, **options) as (server, port):
        yield f"ws://127.0.0.1:{port}/v1/realtime", server.turn_log, server.settings
