"""A phone call through the Twilio Media Streams bridge (/v1/twilio): a scripted Media Streams
client sends μ-law 8 kHz like Twilio does, hears the answer as media with a mark after each
piece, echoes the marks of what it played, is told to clear its playback when the caller talks
over it, and the conversation keeps only what was heard; a keypad digit reaches the agent.
Keys come in the start message."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from voice import audio as pcm
from voice.testing.fakes import FakeChat, FakeSynthesizer, silence, tone
from voice.testing.harness import fake_engines, running_server, utterance

FRAME = 160  # μ-law bytes in 20 ms at 8 kHz: what Twilio sends in one media message


def twilio_url(url: str) -> str:
    return url.replace("/v1/realtime", "/v1/twilio")


async def send_audio(ws: ClientConnection, samples: np.ndarray, *, realtime: bool = False) -> None:
    """``samples`` as Twilio sends a caller's audio: 20 ms a message (paced like a call with
    ``realtime``, else as fast as the socket takes them)."""
    data = pcm.encode(samples, 16_000, "audio/pcmu")
    for i in range(0, len(data), FRAME):
        payload = base64.b64encode(data[i : i + FRAME]).decode()
        await ws.send(
            json.dumps({"event": "media", "media": {"track": "inbound", "payload": payload}})
        )
        if realtime:
            await asyncio.sleep(0.02)


async def until(ws: ClientConnection, kind: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            msg = json.loads(await ws.recv())
            seen.append(msg)
            if msg["event"] == kind:
                return msg


def start(**params: str) -> str:
    return json.dumps(
        {
            "event": "start",
            "streamSid": "MZ123",
            "start": {"streamSid": "MZ123", "callSid": "CA123", "customParameters": params},
        }
    )


async def test_a_phone_call_is_answered_interrupted_and_hung_up(tmp_path: Path) -> None:
    chat = FakeChat(reply="Sure. I can help you with your order today, just a moment please.")
    engines = fake_engines(chat=[chat], tts=FakeSynthesizer(ms_per_char=20))  # ~1.3 s answers
    async with (
        running_server(tmp_path, engines) as (url, _, _),
        connect(twilio_url(url)) as ws,
    ):
        hello = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        await ws.send(json.dumps(hello))
        await ws.send(start())
        keypad = {"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "5"}}
        await ws.send(json.dumps(keypad))
        await send_audio(ws, utterance())
        seen: list[dict[str, Any]] = []
        first = await until(ws, "media", seen)
        assert first["streamSid"] == "MZ123"
        assert base64.b64decode(first["media"]["payload"])  # μ-law bytes, ready for the phone
        # Each piece of audio is followed by a mark "<item>:<ms so far>". The whole answer
        # arrives (Twilio buffers it); the phone has played 300 ms of it when the caller
        # speaks, and said so by echoing those marks, as Twilio does once audio is played.
        marks: list[dict[str, Any]] = []
        while not marks or float(marks[-1]["mark"]["name"].rpartition(":")[2]) < 1200:
            marks.append(await until(ws, "mark", seen))
        item = marks[0]["mark"]["name"].rpartition(":")[0]
        assert item.startswith("item_") and {
            m["mark"]["name"].rpartition(":")[0] for m in marks
        } == {item}
        played = [m for m in marks if float(m["mark"]["name"].rpartition(":")[2]) <= 300]
        heard_ms = float(played[-1]["mark"]["name"].rpartition(":")[2])
        for m in played:
            await ws.send(json.dumps({"event": "mark", "streamSid": "MZ123", "mark": m["mark"]}))
        # The caller talks over the answer, as a call does (20 ms a message, in time): Twilio
        # is told to drop what it has queued, and hands back the marks of the audio it dropped
        # (never heard).
        talking = asyncio.create_task(
            send_audio(ws, np.concatenate([tone(1400), silence(900)]), realtime=True)
        )
        await until(ws, "clear", seen)
        for m in marks[len(played) :]:
            await ws.send(json.dumps({"event": "mark", "streamSid": "MZ123", "mark": m["mark"]}))
        await talking
        second = await until(ws, "mark", seen)  # the second answer's audio
        assert second["mark"]["name"].rpartition(":")[0] != item
        log = tmp_path / "turns.jsonl"
        for _ in range(200):  # the answer's turn is written once its response ends (10 s)
            if log.exists() and len(log.read_text().splitlines()) >= 2:
                break
            await asyncio.sleep(0.05)
        await ws.send(json.dumps({"event": "stop", "stop": {"callSid": "CA123"}}))
        async with asyncio.timeout(5):
            await ws.wait_closed()
    assert any(m["content"] == "[keypad 5]" for m in chat.last_messages)
    # The interrupted answer is kept as the caller heard it (up to the last echoed mark),
    # not as it was sent.
    (said,) = [m["content"] for m in chat.last_messages if m["role"] == "assistant"]
    full = "Sure. I can help you with your order today, just a moment please."
    assert said and said != full and full.startswith(said.rstrip(".,")), (said, heard_ms)
    # At 20 ms a character, 300 ms of audio holds ~15 characters: a few words, not all.
    assert len(said) < 0.4 * len(full), (said, heard_ms)
    turns = [json.loads(line) for line in (tmp_path / "turns.jsonl").read_text().splitlines()]
    # The server had sent the whole first answer (its turn was spoken); the phone had not
    # played it all: only the marks tell, and the history above follows them.
    assert [t["outcome"] for t in turns] == ["spoken", "spoken"]


async def test_a_keyed_server_wants_the_key_in_the_start_message(tmp_path: Path) -> None:
    keys = {"api_keys": ["phone-key-0123456789"]}
    async with running_server(tmp_path, fake_engines(), voice=keys) as (url, _, _):
        async with connect(twilio_url(url)) as ws:
            await ws.send(start())
            async with asyncio.timeout(5):
                await ws.wait_closed()
            assert ws.close_code == 1008
        async with connect(twilio_url(url)) as ws:
            await ws.send(start(api_key="phone-key-0123456789"))
            await send_audio(ws, utterance())
            await until(ws, "media", [])
            await ws.send(json.dumps({"event": "stop"}))


async def test_messages_of_another_shape_are_ignored_and_the_call_goes_on(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, fake_engines()) as (url, _, _),
        connect(twilio_url(url)) as ws,
    ):
        for junk in ("not json", "[1, 2]", '{"event": "media", "media": "x"}', '{"event": 7}'):
            await ws.send(junk)
        await ws.send(json.dumps({"event": "dtmf", "dtmf": ["5"]}))
        await ws.send(start())
        await send_audio(ws, utterance())
        answer = await until(ws, "media", [])
        assert answer["streamSid"] == "MZ123"
        await ws.send(json.dumps({"event": "stop"}))
