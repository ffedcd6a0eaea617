"""Sessions in another language (settings.languages): a client that asks for Korean
(``audio.input.transcription.language = "ko"``) is served by that language's runtime (its ASR,
LLM instructions, voice and phrases) from its next turn; a language not served is refused whole;
what the client chose itself stays. Scripted engines here; the real Korean models are measured
by ``castwork eval`` (README)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import websockets

from base.errors import ConfigError
from base.settings import load, with_overrides
from voice.clients.realtime import RealtimeClient
from voice.runtime.assembly import EngineCache, language_runtime
from voice.runtime.turns import Runtime
from voice.settings import KOREAN, VoiceSettings
from voice.testing.fakes import FakeChat, FakeSynthesizer, FakeTranscriber
from voice.testing.harness import fake_engines, serving, utterance

KOREAN_REPLY = "네, 내일 아침 날씨를 알려 드릴게요."


def _korean(arm: Runtime, language: str) -> Runtime:
    """What the server builds for Korean, with scripted engines instead of real models."""
    assert language == "ko"
    settings = with_overrides(arm.settings, arm.settings.languages["ko"])
    engines = fake_engines(
        asr=FakeTranscriber(texts=["내일 아침 날씨 알려 줘"], name="fake-asr-ko"),
        chat=[FakeChat(reply=KOREAN_REPLY)],
        tts=FakeSynthesizer(name="fake-tts-ko"),
    )
    return replace(arm, engines=engines, settings=settings)


async def _turn(client: RealtimeClient) -> dict:
    after = len(client.events)
    await client.stream(utterance(), 16_000, realtime=False)
    return await client.wait_for("response.done", after=after)


async def test_a_korean_session_is_served_by_the_korean_runtime(tmp_path: Path) -> None:
    async with serving(tmp_path, fake_engines(), languages=_korean) as (_, port):
        client = await RealtimeClient.open(f"ws://127.0.0.1:{port}/v1/realtime")
        english = await _turn(client)
        ko = {"audio": {"input": {"transcription": {"model": "whisper", "language": "ko"}}}}
        await client.send({"type": "session.update", "session": {"type": "realtime", **ko}})
        updated = await client.wait_for("session.updated")
        korean = await _turn(client)
        await client.close()
    session = updated["session"]
    assert session["audio"]["input"]["transcription"]["language"] == "ko"
    assert session["instructions"] == KOREAN["llm.instructions"]
    assert session["audio"]["output"]["voice"] == "ko"  # espeak-ng's Korean voice
    said = [
        e.event for e in client.events if e.event["type"] == "response.output_audio_transcript.done"
    ]
    assert said[0]["transcript"] != KOREAN_REPLY and said[-1]["transcript"] == KOREAN_REPLY
    assert english["response"]["status"] == korean["response"]["status"] == "completed"
    turns = [json.loads(line) for line in (tmp_path / "turns.jsonl").read_text().splitlines()]
    assert turns[0]["models"]["asr"] == "fake-asr" and turns[-1]["models"]["asr"] == "fake-asr-ko"
    assert turns[-1]["models"]["tts"] == "fake-tts-ko"


async def test_a_language_not_served_is_refused_and_the_clients_choices_stay(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, fake_engines(), languages=_korean) as (_, port):
        client = await RealtimeClient.open(f"ws://127.0.0.1:{port}/v1/realtime")
        french = {"audio": {"input": {"transcription": {"language": "fr"}}}}
        await client.send({"type": "session.update", "session": {"type": "realtime", **french}})
        error = await client.wait_for("error")
        assert error["error"]["code"] == "invalid_value" and "'fr'" in error["error"]["message"]
        mine = {
            "instructions": "Answer like a pirate.",
            **{"audio": {"input": {"transcription": {"language": "ko"}}}},
        }
        await client.send({"type": "session.update", "session": {"type": "realtime", **mine}})
        updated = await client.wait_for("session.updated")
        await client.close()
    assert updated["session"]["instructions"] == "Answer like a pirate."
    assert updated["session"]["audio"]["input"]["transcription"]["language"] == "ko"


def test_language_settings_are_checked_and_built_with_their_own_phrases() -> None:
    with pytest.raises(ConfigError, match="en"):
        load(VoiceSettings, languages={"en": {"asr.model": "base"}})
    with pytest.raises(ConfigError, match=r"voice\.port"):
        load(VoiceSettings, languages={"ko": {"voice.port": 1}})
    s = load(VoiceSettings, languages={"ko": {**KOREAN, "tts.fallback": "none"}})
    arm = Runtime("-", fake_engines(), None, None, s)  # type: ignore[arg-type]
    ko = language_runtime(arm, "ko", EngineCache())
    assert ko.engines.asr.name == "whisper:base" and ko.settings.asr.language == "ko"
    assert ko.engines.tts.name == "espeak-ng" and ko.engines.apology is not None
    assert ko.policy.apology_text == KOREAN["llm.apology"]
    # Korean decodes greedily, bounded per second of audio; English keeps Whisper's fallback.
    assert (ko.settings.asr.temperatures, ko.settings.asr.max_tokens_per_s) == ([0.0], 15.0)
    assert s.asr.temperatures == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and s.asr.max_tokens_per_s == 0


def test_korean_is_scored_per_character_with_numbers_read_out() -> None:
    from voice.monitoring.textnorm import korean_numbers, word_errors

    assert korean_numbers("25,000원") == "이만오천원"
    assert korean_numbers("1,234,567") == "백이십삼만사천오백육십칠"
    assert korean_numbers("10000 1.5 105") == "만 일점오 백오"
    same = word_errors("이 신발은 25,000원입니다.", "이 신발은 이만 오천 원입니다", "ko")
    assert same.edits == 0 and same.reference_words == len("이신발은이만오천원입니다")
    one_off = word_errors("배송은 3일 걸립니다", "배송은 사일 걸립니다", "ko")
    assert (one_off.substitutions, one_off.edits) == (1, 1)


async def test_a_phone_line_names_its_language_in_the_stream_parameters(tmp_path: Path) -> None:
    from tests.test_twilio import send_audio, start, until

    async with serving(tmp_path, fake_engines(), languages=_korean) as (_, port):
        url = f"ws://127.0.0.1:{port}/v1/twilio"
        async with websockets.connect(url) as ws:
            await ws.send(start(language="ko"))
            await send_audio(ws, utterance())
            await until(ws, "media", [])  # answered in μ-law: the phone session stands
            await ws.send(json.dumps({"event": "stop"}))
        # A language not served leaves the call in English, its phone audio set.
        async with websockets.connect(url) as ws:
            await ws.send(start(language="fr"))
            await send_audio(ws, utterance())
            await until(ws, "media", [])
            await ws.send(json.dumps({"event": "stop"}))
    turns = [json.loads(line) for line in (tmp_path / "turns.jsonl").read_text().splitlines()]
    assert [t["models"]["asr"] for t in turns] == ["fake-asr-ko", "fake-asr"]
    assert turns[0]["models"]["tts"] == "fake-tts-ko"
