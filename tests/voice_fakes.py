"""Helpers for voice tests: a server on a free loopback port with scripted engines."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from voice.clients.realtime import RealtimeClient
from voice.learning.cases import CaseRecorder
from voice.monitoring.textnorm import word_errors
from voice.runtime.latency import TurnLog
from voice.runtime.server import VoiceServer
from voice.runtime.turns import Engines, Runtime, TurnPolicy
from voice.testing.fakes import EnergyVad, FakeChat, FakeSynthesizer, FakeTranscriber, silence, tone
from workers.settings import Settings, load_settings

try:
    from openai.types.realtime import RealtimeServerEvent

    SERVER_EVENT: TypeAdapter[Any] | None = TypeAdapter(RealtimeServerEvent)
except ImportError:  # pragma: no cover
    SERVER_EVENT = None


def fake_engines(**overrides: Any) -> Engines:
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
    return np.concatenate([silence(200), tone(speech_ms), silence(pause_ms)])


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path,
    engines: Engines,
    *,
    policy: TurnPolicy | None = None,
    runtimes: Sequence[Runtime] = (),
    cases: CaseRecorder | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[str, TurnLog, Settings]]:
    s = load_settings(data_dir=tmp_path, **settings)
    log = TurnLog(tmp_path / "turns.jsonl")
    server = VoiceServer(
        s,
        engines,
        EnergyVad(),
        policy=policy or TurnPolicy(lead_ms=200),
        turn_log=log,
        runtimes=runtimes,
        cases=cases,
    )
    srv = await server.start("127.0.0.1", 0)
    port = next(iter(srv.sockets)).getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/realtime", log, s
    finally:
        srv.close()
        await srv.wait_closed()
        log.close()


def assert_valid(client: RealtimeClient) -> None:
    """Every server event validates against the openai package's own models."""
    assert SERVER_EVENT is not None
    for r in client.events:
        SERVER_EVENT.validate_python(r.event)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate as `castwork eval` counts it (:mod:`voice.monitoring.textnorm`)."""
    return word_errors(reference, hypothesis).rate
