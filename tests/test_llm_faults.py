"""A remote LLM that misbehaves, for real: the real OpenAI-compatible backend
(:class:`voice.engines.llm.OpenAIChat`, the ``openai`` client) talks over loopback HTTP to a fake
server (:mod:`voice.testing.fake_openai`) that hangs, answers 5xx, cuts the connection mid-stream, or
streams garbage. Every turn still ends in speech within the deadline: the next backend's
answer, or what was already said."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from voice.clients.realtime import RealtimeClient
from voice.engines.llm import OpenAIChat
from voice.runtime.turns import TurnPolicy
from voice.testing.fake_openai import Behaviour, FakeOpenAIServer
from voice.testing.fakes import FakeChat
from voice.testing.harness import fake_engines, running_server

from .test_voice_server import _say, _turns

FIRST_TOKEN_S = 0.8
TOTAL_S = 2.0
BACKUP = "The local model answers instead."


async def one_turn(tmp_path: Path, fake: Behaviour) -> tuple[RealtimeClient, dict[str, Any]]:
    """One spoken turn on a voice server whose first LLM backend is the real OpenAIChat
    talking to the fake server (behaving as ``fake`` says), and whose second is local."""
    with FakeOpenAIServer(fake) as server:
        remote = OpenAIChat(server.url, model="fake", name="remote", timeout_s=TOTAL_S)
        engines = fake_engines(chat=[remote, FakeChat(reply=BACKUP, name="local")])
        policy = TurnPolicy(
            first_token_timeout_s=FIRST_TOKEN_S, total_timeout_s=TOTAL_S, lead_ms=200
        )
        async with running_server(tmp_path, engines, policy=policy) as (url, _, _):
            client = await RealtimeClient.open(url)
            done = await _say(client)
            await client.close()
        await remote.aclose()
    return client, done


@pytest.mark.parametrize(
    ("mode", "recovery", "said"),
    [
        ("ok", [], "Here is a real answer from the fake server."),
        ("hang", ["llm_fallback"], BACKUP),
        ("error", ["llm_fallback"], BACKUP),
        ("garbage", ["llm_fallback"], BACKUP),
        ("slow", ["llm_fallback"], BACKUP),
        # A few words, then the connection is cut or goes silent: nothing speakable had been
        # produced yet ("Here is a"), so the backup answers the whole turn.
        ("close_mid", ["llm_fallback"], BACKUP),
        ("hang_mid", ["llm_fallback"], BACKUP),
    ],
)
@pytest.mark.reliability("fault", "remote LLM (OpenAI-compatible) server: {mode}")
async def test_a_misbehaving_remote_llm_falls_back_in_time(
    tmp_path: Path, mode: str, recovery: list[str], said: str
) -> None:
    fake = Behaviour(mode=mode, delay_s=FIRST_TOKEN_S * 3)
    t0 = time.monotonic()
    client, done = await one_turn(tmp_path, fake)
    elapsed = time.monotonic() - t0
    assert done["response"]["status"] == "completed"
    transcript = await client.wait_for("response.output_audio_transcript.done")
    assert transcript["transcript"] == said
    assert len(client.reply_audio()) > 0
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["recovery"] == recovery and turn["outcome"] == "spoken"
    assert fake.requests == 1
    # The first answer audio left within the first-token deadline (+ the fakes' own time).
    assert turn["durations_ms"]["voice_to_voice"] < (FIRST_TOKEN_S + 1.0) * 1000, turn
    assert elapsed < 30


@pytest.mark.reliability("fault", "remote LLM stream cut after a spoken sentence")
async def test_cut_after_speaking_keeps_what_was_said(tmp_path: Path) -> None:
    fake = Behaviour(
        mode="close_mid",
        reply="Sure, one moment. Then the rest of a long answer goes on.",
        tokens_before_fault=5,  # "Sure, one moment. Then the"
    )
    client, done = await one_turn(tmp_path, fake)
    assert done["response"]["status"] == "completed"
    said = (await client.wait_for("response.output_audio_transcript.done"))["transcript"]
    assert said.startswith("Sure, one moment.") and BACKUP not in said
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["recovery"] == ["llm_cut_short"] and turn["models"]["llm"] == "remote"
