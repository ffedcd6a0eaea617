"""`castwork models serve`: Castwork's engines over OpenAI-compatible HTTP, checked with the
official openai SDK; and a voice session whose LLM is served that way by the embedded model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import uvicorn

from voice import audio as pcm
from voice.clients.realtime import RealtimeClient
from voice.engines.llm import OpenAIChat
from voice.modelserver.app import OUTPUT_RATE, Served, create_app
from voice.testing.fakes import FakeChat, FakeSynthesizer, FakeTranscriber, tone
from voice.testing.harness import fake_engines, running_server, utterance
from workers.settings import Settings


@contextlib.contextmanager
def model_server(served: Served, keys: list[str] | None = None) -> Iterator[str]:
    """The app under uvicorn on a free loopback port, in a thread; its /v1 base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(served, keys=keys or []), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the model server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


def fakes() -> Served:
    return Served(
        chat=FakeChat(reply="Sure. It is noon."),
        asr=FakeTranscriber(texts=["what time is it"]),
        tts=FakeSynthesizer(ms_per_char=50.0),
    )


def test_the_sdk_talks_to_every_endpoint() -> None:
    served = fakes()
    with contextlib.ExitStack() as stack, model_server(served) as url:
        client = stack.enter_context(openai.OpenAI(base_url=url, api_key="unused", max_retries=0))
        assert [m.id for m in client.models.list()] == ["fake-llm", "fake-asr", "fake-tts"]
        messages = [{"role": "user", "content": "What time is it?"}]
        whole = client.chat.completions.create(model="any", messages=messages)  # type: ignore[arg-type]
        assert whole.choices[0].message.content == "Sure. It is noon."
        streamed = client.chat.completions.create(model="any", messages=messages, stream=True)  # type: ignore[arg-type]
        pieces = [c.choices[0].delta.content or "" for c in streamed if c.choices]
        assert len(pieces) > 2 and "".join(pieces) == "Sure. It is noon."
        wav = pcm.wav_bytes(tone(800), 16_000)
        heard = client.audio.transcriptions.create(model="whisper", file=("a.wav", wav))
        assert heard.text == "what time is it"
        # A prompt reaches the model (a voice server's remote decode of speech over an answer).
        client.audio.transcriptions.create(model="whisper", file=("a.wav", wav), prompt="Mm-hmm.")
        assert isinstance(served.asr, FakeTranscriber)
        assert served.asr.prompts == [None, "Mm-hmm."]
        with client.audio.speech.with_streaming_response.create(
            model="tts", voice="joe", input="Hello there", response_format="pcm"
        ) as reply:
            data = reply.read()
        # 11 characters at 50 ms each, as 24 kHz PCM16
        assert len(data) == pytest.approx(0.55 * OUTPUT_RATE * 2, rel=0.01)
        samples = np.frombuffer(data, dtype="<i2")
        assert np.abs(samples).max() > 1000  # sound, not silence


def test_keys_and_bad_input_get_openai_errors() -> None:
    with contextlib.ExitStack() as stack, model_server(fakes(), keys=["s3cret-key"]) as url:
        stranger = stack.enter_context(openai.OpenAI(base_url=url, api_key="wrong", max_retries=0))
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()
        client = stack.enter_context(
            openai.OpenAI(base_url=url, api_key="s3cret-key", max_retries=0)
        )
        with pytest.raises(openai.BadRequestError, match="not a 16-bit PCM WAV"):
            client.audio.transcriptions.create(model="whisper", file=("a.wav", b"RIFF nonsense"))
        with pytest.raises(openai.BadRequestError, match="messages"):
            client.chat.completions.create(model="any", messages=[])


@pytest.mark.models
async def test_a_voice_session_answers_through_the_embedded_llm_served_remotely(
    tmp_path: Path, settings: Settings
) -> None:
    from voice.engines.factory import build_chat_chain

    served = Served(chat=build_chat_chain(settings)[0], max_tokens=24)
    with model_server(served) as url:
        remote = OpenAIChat(url, model="smollm2-135m", name="remote:smollm2-135m")
        # A short tone per character: the answer plays in real time, its words are the point.
        engines = fake_engines(chat=[remote], tts=FakeSynthesizer(ms_per_char=5))
        try:
            async with running_server(tmp_path, engines) as (ws_url, _, _):
                client = await RealtimeClient.open(ws_url)
                await client.stream(utterance(), 16_000, realtime=False)
                done = await client.wait_for_answer(timeout=60)
                await client.close()
        finally:
            await remote.aclose()
    assert done["response"]["status"] == "completed"
    (item,) = done["response"]["output"]
    said = item["content"][0].get("transcript") or ""
    assert len(said.split()) >= 2, said  # words from the real model, spoken by the fake voice
    lines = (tmp_path / "turns.jsonl").read_text().splitlines()
    (turn,) = [json.loads(line) for line in lines]
    assert turn["outcome"] == "spoken" and turn["models"]["llm"] == "remote:smollm2-135m"


def _spoken_turns(tmp_path: Path) -> list[dict[str, object]]:
    lines = (tmp_path / "turns.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.models
async def test_a_voice_session_with_every_stage_remote_completes_a_spoken_turn(
    tmp_path: Path, settings: Settings
) -> None:
    """ASR, LLM and TTS all behind `castwork models serve` (the embedded models); the voice
    server builds its engines from settings that name only URLs."""
    from voice.engines.factory import build_asr, build_chat_chain, build_tts
    from voice.runtime.assembly import load_engines
    from voice.testing.clips import bundled_clip

    served = Served(
        chat=build_chat_chain(settings)[0],
        asr=build_asr(settings),
        tts=build_tts(settings),
        max_tokens=24,
    )
    with model_server(served) as url:
        remote = {"kind": "openai", "url": url}
        front = type(settings).model_validate(
            {
                **settings.model_dump(),
                "asr": {**settings.asr.model_dump(), "backends": [{**remote, "model": "whisper"}]},
                "llm": {**settings.llm.model_dump(), "backends": [{**remote, "model": "llm"}]},
                "tts": {**settings.tts.model_dump(), "backends": [{**remote, "model": "tts"}]},
            }
        )
        engines = await asyncio.to_thread(load_engines, front)
        assert engines.apology is not None  # pre-synthesised through the remote voice
        try:
            async with running_server(tmp_path, engines) as (ws_url, _, _):
                client = await RealtimeClient.open(ws_url)
                clip = np.concatenate([bundled_clip(), np.zeros(16_000, np.float32)])
                await client.stream(clip, 16_000, realtime=False)
                done = await client.wait_for_answer(timeout=60)
                audio = client.reply_audio()
                await client.close()
        finally:
            await engines.chat[0].aclose()  # type: ignore[attr-defined]
    assert done["response"]["status"] == "completed" and audio.size > 4_000
    (turn,) = _spoken_turns(tmp_path)
    assert turn["outcome"] == "spoken"
    assert turn["models"] == {
        "asr": f"openai:whisper@{url}",
        "llm": "openai:llm",  # the LLM chain names its backends by kind and model
        "tts": f"openai:tts@{url}",
    }


async def test_a_remote_stage_that_fails_falls_back_with_its_reason(tmp_path: Path) -> None:
    """Nothing listens at the remote URL: the turn is transcribed and spoken by the next
    backend of each chain, and the record says so (asr_retry, tts_fallback)."""
    from voice.engines.remote import RemoteSynthesizer, RemoteTranscriber

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # closed when the block ends
    asr = RemoteTranscriber(dead, model="whisper", name="remote-asr", timeout_s=2)
    tts = RemoteSynthesizer(dead, model="tts", voice="joe", name="remote-tts", timeout_s=2)
    engines = fake_engines(
        asr=asr,
        asr_fallback=FakeTranscriber(texts=["what time is it"], name="local-asr"),
        tts=tts,
        tts_fallback=FakeSynthesizer(name="local-tts"),
    )
    try:
        async with running_server(tmp_path, engines) as (ws_url, _, _):
            client = await RealtimeClient.open(ws_url)
            await client.stream(utterance(), 16_000, realtime=False)
            done = await client.wait_for_answer(timeout=30)
            await client.close()
    finally:
        asr.close()
        tts.close()
    assert done["response"]["status"] == "completed"
    (turn,) = _spoken_turns(tmp_path)
    assert turn["outcome"] == "spoken"
    recovery = turn["recovery"]
    assert isinstance(recovery, list) and "asr_retry" in recovery and "tts_fallback" in recovery
