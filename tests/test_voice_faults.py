"""Faults injected into a running voice server (real WebSocket, scripted fake engines):
engines raising mid-turn, a client that never reads, and random event streams over the wire.
Each must leave the server serving and the session either answering or closed cleanly."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from voice import audio as pcm
from voice.clients.realtime import RealtimeClient, SessionRefused
from voice.runtime import latency
from voice.testing.fakes import FakeChat, FakeSynthesizer, FakeTranscriber
from voice.testing.harness import fake_engines, running_server, utterance

from .test_protocol_fuzz import client_objects
from .voice_fakes import assert_valid


def _turns(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _say(client: RealtimeClient, timeout: float = 30) -> dict[str, Any]:
    after = len(client.events)
    await client.stream(utterance(), 16_000, realtime=False)
    return await client.wait_for("response.done", after=after, timeout=timeout)


@pytest.mark.reliability("fault", "TTS raises mid-answer (second sentence)")
async def test_tts_failing_mid_answer_finishes_in_the_fallback(tmp_path: Path) -> None:
    reply = "First sentence here. Second sentence now. Third one to end."
    engines = fake_engines(chat=[FakeChat(reply=reply)], tts=FakeSynthesizer(fail={2}))
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        done = await _say(client)
        second = await _say(client)  # the session goes on, and so does the main engine
        await client.close()
    assert done["response"]["status"] == second["response"]["status"] == "completed"
    main, fallback = engines.tts, engines.tts_fallback
    assert isinstance(main, FakeSynthesizer) and isinstance(fallback, FakeSynthesizer)
    assert main.spoken[0] == "First sentence here."  # spoken before the fault
    # The rest of that answer, where the chunker cut it, went to the fallback.
    assert " ".join(fallback.spoken) == "Second sentence now. Third one to end."
    assert main.spoken[1] == "First sentence here."  # next turn: back on the main engine
    heard = done["response"]["output"][0]["content"][0]["transcript"]
    assert heard == reply
    assert_valid(client)
    first, _ = _turns(tmp_path / "turns.jsonl")
    assert first["recovery"] == ["tts_fallback"] and first["outcome"] == "spoken"


@pytest.mark.reliability("fault", "ASR raises on the final decode after partials")
async def test_asr_failing_after_partials_retries_and_answers(tmp_path: Path) -> None:
    # Partials every 200 ms succeed; the decode at the endpoint (a later call) raises once.
    asr = FakeTranscriber(texts=["what time is it"], fail=set(range(3, 40)))
    fallback = FakeTranscriber(texts=["what time is it"], name="fake-asr-fallback")
    engines = fake_engines(asr=asr, asr_fallback=fallback)
    async with running_server(tmp_path, engines, vad={"partial_every_ms": 200}) as (url, _, _):
        client = await RealtimeClient.open(url)
        after = len(client.events)
        await client.stream(utterance(speech_ms=1500), 16_000, realtime=True)
        done = await client.wait_for("response.done", after=after, timeout=30)
        await client.close()
    assert done["response"]["status"] == "completed"
    assert asr.calls >= 3 and fallback.calls >= 1
    assert "conversation.item.input_audio_transcription.delta" in client.types()
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert "asr_retry" in turn["recovery"] and turn["outcome"] == "spoken"


@pytest.mark.reliability("fault", "client never reads its socket (backpressure)")
async def test_a_client_that_never_reads_is_dropped_and_others_go_on(tmp_path: Path) -> None:
    # Minutes of answer audio: far more than the socket buffers and the outgoing queue hold.
    long_reply = " ".join(["This answer goes on and on for a long while."] * 40)
    engines = fake_engines(
        chat=[FakeChat(reply=long_reply)], tts=FakeSynthesizer(ms_per_char=200.0)
    )
    live_before = latency.live_sessions()
    async with running_server(tmp_path, engines, voice={"send_timeout_s": 1.0}) as (url, _, _):
        # A tiny receive window, and a client library that stops reading after one message.
        sock = socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0])))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled = await connect(url, sock=sock, max_queue=1, compression=None)
        try:
            audio = pcm.encode(utterance(), 16_000, "audio/pcm")
            for i in range(0, len(audio), 4800):
                chunk = base64.b64encode(audio[i : i + 4800]).decode()
                await stalled.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": chunk})
                )
            t0 = time.monotonic()
            # Meanwhile a well-behaved caller on the same server is answered.
            other = await RealtimeClient.open(url)
            after = len(other.events)
            await other.stream(utterance(), 16_000, realtime=False)
            await other.wait_for("response.output_audio.delta", after=after, timeout=10)
            await other.send({"type": "response.cancel"})
            done = await other.wait_for("response.done", after=after, timeout=10)
            await other.close()
            deadline = t0 + 30
            while time.monotonic() < deadline and latency.live_sessions() > live_before:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            dropped_after = time.monotonic() - t0
        finally:
            stalled.transport.abort()
    assert done["response"]["status"] == "cancelled"  # answered, then cut by its caller
    assert latency.live_sessions() == live_before, "the stalled session was never dropped"
    assert dropped_after < 15
    turns = _turns(tmp_path / "turns.jsonl")
    assert sorted(t["outcome"] for t in turns) == ["abandoned", "cancelled"]


# --- random event streams over a real socket -----------------------------------------------

garbage = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40),
    st.builds(json.dumps, client_objects()),
)
TRIED: list[int] = []


@pytest.mark.reliability("input", "random and malformed event streams over a live WebSocket")
def test_random_event_streams_never_wedge_a_live_session(
    tmp_path_factory: pytest.TempPathFactory, record_property: Any
) -> None:
    TRIED.clear()
    _fuzz_live(tmp_path_factory)
    record_property("tried", sum(TRIED))
    record_property("refused", sum(TRIED))  # every stream ended with an answered turn


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(garbage, min_size=1, max_size=12))
def _fuzz_live(tmp_path_factory: pytest.TempPathFactory, messages: list[str | bytes]) -> None:
    TRIED.append(len(messages))
    asyncio.run(_live(tmp_path_factory.mktemp("fuzz"), messages))


async def _live(tmp_path: Path, messages: list[str | bytes]) -> None:
    engines = fake_engines(chat=[FakeChat(reply="Yes.")])  # a short answer: 25 examples
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        for raw in messages:
            await client.ws.send(raw)
        # Whatever came before, a reset and a spoken turn still get a spoken answer.
        await client.send({"type": "response.cancel"})
        await client.send({"type": "input_audio_buffer.clear"})
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "turn_detection": {"type": "server_vad"},
                        },
                        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
                    },
                    "output_modalities": ["audio"],
                },
            }
        )
        try:
            # Not _say's first response.done after the clip: the response a fuzzed
            # response.create started may still be ending (cancelled) after that point.
            after = len(client.events)
            await client.stream(utterance(), 16_000, realtime=False)
            done = await client.wait_for_answer(after=after, timeout=15)
        finally:
            await client.close()
        assert done["response"]["status"] == "completed", client.types()
        assert_valid(client)


def test_refused_sessions_say_why(tmp_path: Path) -> None:
    async def run() -> SessionRefused:
        async with running_server(tmp_path, fake_engines(), voice={"max_sessions": 1}) as (
            url,
            _,
            _,
        ):
            first = await RealtimeClient.open(url)
            try:
                with pytest.raises(SessionRefused) as refused:
                    await RealtimeClient.open(url)
            finally:
                await first.close()
            return refused.value

    refused = asyncio.run(run())
    assert refused.code == "session_limit_reached" and refused.close_code == 1013
    assert "capacity" in refused.message
