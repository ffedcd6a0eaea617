"""A full spoken turn on the real embedded models, driven by the official openai SDK."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from tests.voice_fakes import wer
from voice import audio as pcm
from voice.engines.asr import WhisperTranscriber
from voice.engines.factory import build_vad
from voice.runtime.assembly import load_engines, turn_policy
from voice.runtime.latency import TurnLog
from voice.runtime.server import VoiceServer
from voice.testing.clips import CLIP_TEXT, bundled_clip
from workers.settings import Settings, load_settings

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def real_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("voice-real")
    return load_settings(data_dir=data, asr={"fallback_model": None})


@pytest.fixture
async def real_server(real_settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    engines = _engines(real_settings)
    log_path = tmp_path / "turns.jsonl"
    log = TurnLog(log_path)
    server = VoiceServer(
        real_settings,
        engines,
        build_vad(real_settings),
        policy=turn_policy(real_settings),
        turn_log=log,
    )
    srv = await server.start("127.0.0.1", 0)
    port = next(iter(srv.sockets)).getsockname()[1]
    yield f"ws://127.0.0.1:{port}/v1", log_path
    srv.close()
    await srv.wait_closed()
    log.close()


_ENGINES: dict[str, Any] = {}


def _engines(settings: Settings) -> Any:
    if "e" not in _ENGINES:  # load once for the module; the fixture's loop differs per test
        _ENGINES["e"] = load_engines(settings)
    return _ENGINES["e"]


async def test_openai_sdk_completes_a_spoken_turn(
    real_server: tuple[str, Path], asr_tiny: WhisperTranscriber
) -> None:
    base, log_path = real_server
    client = AsyncOpenAI(api_key="local", websocket_base_url=base)
    validate: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
    events: list[dict[str, Any]] = []
    clip = np.concatenate([bundled_clip(), np.zeros(16_000, dtype=np.float32)])
    data = pcm.encode(clip, 16_000, "audio/pcm")
    async with client.realtime.connect(model="castwork") as conn:
        await conn.session.update(
            session={"type": "realtime", "instructions": "Answer in one short sentence."}
        )
        for i in range(0, len(data), 4800):  # 100 ms chunks, faster than real time
            await conn.input_audio_buffer.append(
                audio=base64.b64encode(data[i : i + 4800]).decode()
            )
        async for event in conn:
            events.append(event.to_dict())
            if event.type in ("response.done", "error"):
                break
    await client.close()
    for e in events:
        validate.validate_python(e)
    types = [e["type"] for e in events]
    assert "error" not in types, events[-1]
    user = next(
        e["transcript"] for e in events if e["type"].endswith("input_audio_transcription.completed")
    )
    assert wer(CLIP_TEXT, user) < 0.15, user
    done = events[-1]["response"]
    assert done["status"] == "completed"
    reply = next(
        e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"
    )
    assert reply.strip()
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    heard = asr_tiny.transcribe(pcm.decode(audio, "audio/pcm")).text
    # The reply audio is speech that says the reply text.
    assert wer(reply, heard) < 0.35, (reply, heard)
    assert log_path.read_text().count("\n") == 1
