"""The voice server end to end over a real WebSocket, with scripted fake engines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from voice.clients.realtime import RealtimeClient
from voice.runtime.turns import TurnPolicy
from voice.testing.fakes import FakeChat, FakeSynthesizer, FakeTranscriber, silence, tone
from voice.testing.harness import fake_engines, running_server, utterance

from .voice_fakes import assert_valid


def _turns(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def _say(client: RealtimeClient, **kw: float) -> dict:
    after = len(client.events)
    await client.stream(utterance(**kw), 16_000, realtime=False)
    return await client.wait_for("response.done", after=after)


async def test_spoken_turn_happy_path(tmp_path: Path) -> None:
    engines = fake_engines()
    async with running_server(tmp_path, engines) as (url, _log, _):
        client = await RealtimeClient.open(url)
        done = await _say(client)
        await client.close()
    assert done["response"]["status"] == "completed"
    types = client.types()
    order = [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.done",
    ]
    firsts = [types.index(t) for t in order]
    assert firsts == sorted(firsts), types
    transcript = await client.wait_for("response.output_audio_transcript.done")
    assert transcript["transcript"] == "Sure. I can help with that today."
    assert len(client.reply_audio()) > 16_000  # a second or more of speech
    assert engines.chat[0].last_messages[-1] == {"role": "user", "content": "what time is it"}
    assert_valid(client)
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["outcome"] == "spoken" and turn["recovery"] == []
    assert {"voice_to_voice", "asr", "endpointing"} <= set(turn["durations_ms"])


@pytest.mark.reliability("fault", "hallucinated transcript (Whisper's 'Thank you.')")
async def test_hallucinated_transcript_never_reaches_the_llm(tmp_path: Path) -> None:
    engines = fake_engines(asr=FakeTranscriber(texts=["Thank you."]))
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.stream(utterance(), 16_000, realtime=False)
        await client.wait_for("conversation.item.input_audio_transcription.completed")
        await asyncio.sleep(0.2)
        await client.close()
    assert "response.created" not in client.types()
    assert engines.chat[0].calls == 0
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["outcome"] == "no_speech" and "no_speech" in turn["recovery"]


@pytest.mark.reliability("fault", "ASR raises: retried on the fallback model")
async def test_asr_error_retries_on_the_fallback_model(tmp_path: Path) -> None:
    engines = fake_engines(
        asr=FakeTranscriber(fail={-1}), asr_fallback=FakeTranscriber(texts=["book a table"])
    )
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _say(client)
        await client.close()
    assert engines.chat[0].last_messages[-1]["content"] == "book a table"
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["outcome"] == "spoken" and "asr_retry" in turn["recovery"]


@pytest.mark.reliability("fault", "ASR raises on both models: spoken apology")
async def test_asr_failing_twice_says_sorry(tmp_path: Path) -> None:
    engines = fake_engines(asr=FakeTranscriber(fail={-1}), asr_fallback=FakeTranscriber(fail={-1}))
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _say(client)
        await client.close()
    said = await client.wait_for("response.output_audio_transcript.done")
    assert "didn't catch that" in said["transcript"] and engines.chat[0].calls == 0
    assert_valid(client)
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["outcome"] == "spoken" and turn["recovery"] == ["asr_retry", "asr_failed"]


@pytest.mark.reliability("fault", "LLM times out: next backend answers")
async def test_llm_timeout_falls_back_to_the_next_backend(tmp_path: Path) -> None:
    slow = FakeChat(first_token_delay_s=5.0, name="slow")
    engines = fake_engines(chat=[slow, FakeChat(reply="Here you go.", name="backup")])
    policy = TurnPolicy(first_token_timeout_s=0.3, lead_ms=200)
    async with running_server(tmp_path, engines, policy=policy) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _say(client)
        await client.close()
    said = await client.wait_for("response.output_audio_transcript.done")
    assert said["transcript"] == "Here you go."
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert "llm_fallback" in turn["recovery"] and turn["models"]["llm"] == "backup"


@pytest.mark.reliability("fault", "every LLM fails: cached apology spoken")
async def test_all_llms_failing_speak_the_cached_apology(tmp_path: Path) -> None:
    engines = fake_engines(chat=[FakeChat(error_after=0), FakeChat(error_after=0, name="b")])
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _say(client)
        await client.close()
    said = await client.wait_for("response.output_audio_transcript.done")
    assert said["transcript"].startswith("Sorry") and len(client.reply_audio()) > 0
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["recovery"] == ["llm_fallback", "llm_all_failed"] and turn["outcome"] == "spoken"


@pytest.mark.reliability("fault", "TTS raises on the first sentence: fallback engine")
async def test_tts_error_continues_in_the_fallback_engine(tmp_path: Path) -> None:
    engines = fake_engines(tts=FakeSynthesizer(fail={1}))
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _say(client)
        await client.close()
    fallback = engines.tts_fallback
    assert isinstance(fallback, FakeSynthesizer) and fallback.spoken  # the rest went there
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert "tts_fallback" in turn["recovery"] and turn["outcome"] == "spoken"


@pytest.mark.reliability("fault", "barge-in: caller talks over the answer")
async def test_barge_in_cancels_and_truncates_to_what_was_played(tmp_path: Path) -> None:
    long_reply = " ".join(["This is a long answer that keeps going."] * 6)
    engines = fake_engines(chat=[FakeChat(reply=long_reply, token_delay_s=0.01)])
    async with running_server(tmp_path, engines, policy=TurnPolicy(lead_ms=100)) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.stream(utterance(), 16_000, realtime=False)
        await client.wait_for("response.output_audio.delta")
        await asyncio.sleep(0.5)
        after = len(client.events)
        # The user talks over it, longer than a backchannel (vad.barge_in_min_ms).
        await client.stream(tone(1200), 16_000, realtime=False)
        await client.wait_for("input_audio_buffer.speech_started", after=after)
        done = await client.wait_for("response.done", after=after)
        await client.stream(silence(900), 16_000, realtime=False)
        await client.wait_for("response.done", after=len(client.events) - 1, timeout=10)
        await client.close()
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    heard = done["response"]["output"][0]["content"][0]["transcript"]
    assert 0 < len(heard) < len(long_reply)
    assert_valid(client)
    turns = _turns(tmp_path / "turns.jsonl")
    cut = next(t for t in turns if "barge_in" in t["recovery"])
    assert cut["outcome"] == "cancelled" and cut["extra"]["cancel_to_done_ms"] < 50
    # The next turn's LLM context holds only what was heard.
    context = engines.chat[0].last_messages
    assistant = [m["content"] for m in context if m["role"] == "assistant"]
    assert assistant == [heard]


@pytest.mark.reliability("fault", "client drops mid-turn")
async def test_disconnect_mid_turn_is_logged_as_abandoned(tmp_path: Path) -> None:
    engines = fake_engines(chat=[FakeChat(first_token_delay_s=2.0)])
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.stream(utterance(), 16_000, realtime=False)
        await client.wait_for("conversation.item.input_audio_transcription.completed")
        await client.close()
        await asyncio.sleep(0.3)
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["outcome"] == "abandoned" and "abandoned" in turn["recovery"]


@pytest.mark.reliability("input", "bad events and audio on a live session")
async def test_bad_input_gets_an_error_and_the_session_goes_on(tmp_path: Path) -> None:
    async with running_server(tmp_path, fake_engines()) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.ws.send("{not json")
        await client.send({"type": "no.such.event", "event_id": "e1"})
        await client.send({"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "e2"})
        await client.send({"type": "conversation.item.truncate", "item_id": "x", "event_id": "e3"})
        await client.send({"type": "input_audio_buffer.commit", "event_id": "e4"})
        await asyncio.sleep(0.3)
        errors = [r.event["error"] for r in client.events if r.event["type"] == "error"]
        assert [e.get("event_id") for e in errors] == [None, "e1", "e2", "e3", "e4"]
        assert errors[0]["code"] == "invalid_json" and errors[1]["code"] == "unknown_event"
        done = await _say(client)  # still serving
        await client.close()
    assert done["response"]["status"] == "completed"
    assert_valid(client)


async def test_manual_commit_and_text_items(tmp_path: Path) -> None:
    engines = fake_engines(chat=[FakeChat(reply="Noted.")])
    async with running_server(tmp_path, engines) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief.",
                                                                  "audio": {"input": {"turn_detection": None}}}})  # fmt: skip
        updated = await client.wait_for("session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        await client.stream(tone(600), 16_000, realtime=False)
        await client.send({"type": "input_audio_buffer.commit"})
        await client.send({"type": "response.create"})
        first = await client.wait_for("response.done")
        n = len(client.events)
        await client.send({"type": "conversation.item.create",
                           "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "and tomorrow?"}]}})  # fmt: skip
        await client.send({"type": "response.create"})
        second = await client.wait_for("response.done", after=n)
        await client.close()
    assert first["response"]["status"] == second["response"]["status"] == "completed"
    msgs = engines.chat[0].last_messages
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in msgs[1:]] == ["what time is it", "Noted.", "and tomorrow?"]
    assert "input_audio_buffer.speech_started" not in client.types()
    assert_valid(client)


@pytest.mark.reliability("input", "sessions beyond capacity or without a key")
async def test_capacity_and_auth(tmp_path: Path) -> None:
    async with running_server(tmp_path, fake_engines(), voice={"max_sessions": 1}) as (url, _, _):
        first = await RealtimeClient.open(url)
        from websockets.asyncio.client import connect

        async with connect(url) as ws:
            err = json.loads(await ws.recv())
            assert err["type"] == "error" and err["error"]["code"] == "session_limit_reached"
        await first.close()
    async with running_server(tmp_path, fake_engines(), voice={"api_keys": ["k1"]}) as (url, _, _):
        import websockets

        try:
            await RealtimeClient.open(url)
            raise AssertionError("connected without a key")
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 401
        ok = await RealtimeClient.open(url, api_key="k1")
        await ok.close()


async def test_metrics_and_health_endpoints(tmp_path: Path) -> None:
    import httpx

    async with running_server(tmp_path, fake_engines()) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _say(client)
        await client.close()
        base = url.replace("ws://", "http://").removesuffix("/v1/realtime")
        async with httpx.AsyncClient() as http:
            metrics = await http.get(f"{base}/metrics")
            health = await http.get(f"{base}/healthz")
            missing = await http.get(f"{base}/nope")
    assert health.status_code == 200 and missing.status_code == 404
    text = metrics.text
    assert 'castwork_turns_total{outcome="spoken"}' in text
    assert 'castwork_turn_stage_seconds_count{stage="voice_to_voice"}' in text
    assert "castwork_sessions_active" in text


async def test_telephony_formats_round_trip(tmp_path: Path) -> None:
    async with running_server(tmp_path, fake_engines()) as (url, _, _):
        client = await RealtimeClient.open(url)
        client.input_format = client.output_format = "audio/pcmu"
        fmt = {"type": "audio/pcmu"}
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": fmt}, "output": {"format": fmt}},
                },
            }
        )
        await client.wait_for("session.updated")
        done = await _say(client)
        await client.close()
    assert done["response"]["status"] == "completed"
    deltas = [r.event for r in client.events if r.event["type"] == "response.output_audio.delta"]
    import base64

    raw = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    # 8 kHz, one byte a sample: a 200 ms delta is 1600 bytes.
    assert len(base64.b64decode(deltas[0]["delta"])) == 1600
    assert len(raw) > 8_000  # over a second of 8 kHz audio
    assert len(client.reply_audio()) > 8_000
    assert_valid(client)


async def test_metrics_need_a_key_when_keys_are_set(tmp_path: Path) -> None:
    import httpx

    async with running_server(tmp_path, fake_engines(), voice={"api_keys": ["k-metrics"]}) as (
        url,
        _,
        _,
    ):
        base = url.replace("ws://", "http://").removesuffix("/v1/realtime")
        async with httpx.AsyncClient() as http:
            anonymous = await http.get(f"{base}/metrics")
            wrong = await http.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get(f"{base}/metrics", headers={"Authorization": "Bearer k-metrics"})
            health = await http.get(f"{base}/healthz")
    assert anonymous.status_code == wrong.status_code == 401
    assert right.status_code == 200 and "castwork_turns_total" in right.text
    assert health.status_code == 200  # liveness stays open for probes
