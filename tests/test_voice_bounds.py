"""What one hostile client can make the voice server hold, and who may open a session at all.

A real server on loopback with scripted fake engines: floods of audio and text must leave the
session's memory bounded and the client told why; a key counts however its header is spelt;
a page from another site (or a rebound DNS name) is refused. The bounds' building blocks and
the case recorder's audio caps are tested on their own below.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from base.access import bearer_token
from voice import audio as pcm
from voice.audio import AudioRateLimit, Timeline
from voice.clients.realtime import RealtimeClient, SessionRefused
from voice.core.record import TurnRecord
from voice.learning.cases import AUDIO_FILE, CASE_FILE, CaseRecorder, CaseStore, export
from voice.runtime import connection as voice_connection
from voice.runtime import server as voice_server
from voice.runtime.server import key_id
from voice.testing.fakes import tone
from voice.testing.harness import fake_engines, running_server, utterance
from workers.settings import load_settings

# Silence as a client sends it: μ-law 0xFF and PCM16 zeros both decode to 0.
SILENCE_BYTE = {"audio/pcmu": b"\xff", "audio/pcm": b"\x00"}
NO_RATE_LIMIT = {"max_audio_rate": 1000, "audio_burst_s": 3600}
CHUNK = 256 * 1024


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[voice_server.Connection]]:
    """Every server-side connection made during the test, to look at what its session holds."""
    made: list[voice_server.Connection] = []

    class Recorded(voice_server.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(voice_server, "Connection", Recorded)
    yield made


async def _configure(client: RealtimeClient, fmt: str, mode: str) -> None:
    td = None if mode == "manual" else {"type": "server_vad"}
    session = {
        "type": "realtime",
        "audio": {"input": {"format": {"type": fmt}, "turn_detection": td}},
    }
    await client.send({"type": "session.update", "session": session})
    await client.wait_for("session.updated")


async def _flood(client: RealtimeClient, fmt: str, mib: int, chunk: int = CHUNK) -> None:
    """Silence, as fast as the socket takes it, in appends of ``chunk`` bytes of audio."""
    audio = base64.b64encode(SILENCE_BYTE[fmt] * chunk).decode()
    message = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
    with contextlib.suppress(ConnectionClosed):
        for _ in range(mib * (1 << 20) // chunk):
            await client.ws.send(message)


async def _fence(client: RealtimeClient) -> None:
    """Wait until the server has handled everything sent before (it answers in order)."""
    await client.send({"type": "conversation.item.delete", "item_id": "none", "event_id": "fence"})
    async with asyncio.timeout(60):
        while not any(e.get("event_id") == "fence" for e in _errors(client)):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def _errors(client: RealtimeClient) -> list[dict[str, Any]]:
    return [r.event["error"] for r in client.events if r.event["type"] == "error"]


@pytest.mark.reliability("input", "4 MiB of {fmt} silence at full speed, {mode}: bounded, told")
@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcm"])
@pytest.mark.parametrize("mode", ["manual", "server_vad"])
async def test_an_audio_flood_leaves_the_session_holding_a_bounded_buffer(
    tmp_path: Path, connections: list[voice_server.Connection], fmt: str, mode: str
) -> None:
    # The rate limit lifted: the buffer bounds alone must hold (4 MiB of G.711 is 9 minutes).
    limits = {"max_buffer_s": 10, **NO_RATE_LIMIT}
    chunk = 32 * 1024
    chunk_ms = chunk / pcm.bytes_per_ms(fmt)  # an append that does not fit is refused whole
    async with running_server(tmp_path, fake_engines(), voice=limits) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _configure(client, fmt, mode)
        await _flood(client, fmt, mib=4, chunk=chunk)
        await _fence(client)
        (conn,) = connections
        held = conn.core.buffered_ms
        codes = [e["code"] for e in _errors(client)]
        await client.close()
    if mode == "manual":
        assert 10_000 - chunk_ms < held <= 10_000
        assert codes == ["input_audio_buffer_full", "item_not_found"]  # told once; the fence
    else:
        assert held <= 300 + 3 * 32  # the prefix padding: nobody spoke
        assert codes == ["item_not_found"]  # nothing refused


@pytest.mark.reliability("input", "{fmt} audio far faster than real time: dropped, closed 1008")
@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcm"])
async def test_an_audio_flood_past_the_rate_limit_is_told_then_closed(
    tmp_path: Path, connections: list[voice_server.Connection], fmt: str
) -> None:
    # send_timeout_s bounds the closing handshake with a client the server stopped reading.
    voice = {"audio_burst_s": 5, "send_timeout_s": 1.0}
    async with running_server(tmp_path, fake_engines(), voice=voice) as (url, _, _):
        client = await RealtimeClient.open(url)
        await _configure(client, fmt, "manual")
        await _flood(client, fmt, mib=4)
        await asyncio.wait_for(client.ws.wait_closed(), 30)
        (conn,) = connections
        held = conn.core.buffered_ms
    (err,) = _errors(client)
    assert err["code"] == "input_audio_rate_exceeded" and "4x real time" in err["message"]
    assert client.ws.close_code == 1008
    assert client.ws.close_reason == "audio sent faster than 4x real time"
    assert held <= 5_000  # at most the burst was taken


async def test_a_flood_of_text_items_is_refused(tmp_path: Path, connections: list[Any]) -> None:
    limits = {"max_items": 50, "max_conversation_chars": 100_000, "max_item_chars": 20_000}
    async with running_server(tmp_path, fake_engines(), voice=limits) as (url, _, _):
        client = await RealtimeClient.open(url)
        for size in (1_000_000, 19_000):
            text = "x" * size
            for _ in range(10):
                await client.send(
                    {
                        "type": "conversation.item.create",
                        "item": {"role": "user", "content": [{"type": "input_text", "text": text}]},
                    }
                )
        await _fence(client)
        (conn,) = connections
        held = sum(len(i.text) for i in conn.core.items.values())
        codes = [e["code"] for e in _errors(client)]
        await client.close()
    assert codes == ["item_too_large"] * 10 + ["conversation_full"] * 5 + ["item_not_found"]
    assert held == 5 * 19_000


@pytest.mark.reliability("input", "the key's header spelt otherwise (bearer, two spaces)")
async def test_sessions_per_key_count_the_key_however_it_is_spelt(tmp_path: Path) -> None:
    keys = {"api_keys": ["k1"], "max_sessions": 8, "max_sessions_per_key": 1}
    async with running_server(tmp_path, fake_engines(), voice=keys) as (url, _, _):
        first = await connect(url, additional_headers={"Authorization": "bearer   k1"})
        assert json.loads(await first.recv())["type"] == "session.created"  # the key is k1
        for spelling in ("Bearer k1", "Bearer  k1", "BEARER k1  "):
            async with connect(url, additional_headers={"Authorization": spelling}) as ws:
                err = json.loads(await ws.recv())
            assert err["error"]["code"] == "session_limit_reached", spelling
        with pytest.raises(SessionRefused) as refused:
            await RealtimeClient.open(url, api_key="k1")
        assert refused.value.code == "session_limit_reached"
        await first.close()


def test_bearer_token_reads_the_scheme_and_the_token() -> None:
    assert bearer_token("Bearer k1") == bearer_token("bearer\tk1 ") == "k1"
    assert bearer_token("  BEARER   k1") == "k1"
    assert bearer_token("k1") == bearer_token("Basic k1") == bearer_token(None) == ""
    assert bearer_token("Bearer") == bearer_token("Bearer   ") == ""
    assert key_id("Bearer  k1") == key_id("bearer k1") != key_id("Bearer k2")
    assert key_id("Basic k1") == key_id(None) == "anonymous"


async def _status(url: str, headers: dict[str, str], path: str = "/v1/realtime") -> int:
    """The HTTP status a WebSocket handshake with exactly these headers gets (101: opened)."""
    port = int(url.split(":")[2].split("/")[0])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
    writer.write((request + "\r\n").encode())
    status = int((await reader.readline()).split()[1])
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return status


@pytest.mark.reliability("input", "a page on another site, or a rebound DNS name, opens a session")
async def test_other_sites_cannot_open_sessions_on_a_keyless_server(tmp_path: Path) -> None:
    settings = {"max_sessions": 20, "allowed_origins": ["https://app.example.com"]}
    async with running_server(tmp_path, fake_engines(), voice=settings) as (url, _, _):
        port = url.split(":")[2].split("/")[0]
        opened = [
            {},  # not a browser
            {"Origin": "http://localhost:3000"},
            {"Origin": "http://127.0.0.1:5173"},
            {"Origin": "https://[::1]"},
            {"Origin": "https://app.example.com"},  # listed
            {"Host": f"localhost:{port}"},
            {"Host": "[::1]"},
        ]
        refused = [
            {"Origin": "https://evil.example"},
            {"Origin": "http://localhost.evil.example"},
            {"Origin": "null"},  # a sandboxed frame, a file
            {"Host": f"evil.example:{port}"},  # DNS rebinding: the page's own name
            {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
        ]
        assert [await _status(url, h) for h in opened] == [101] * len(opened)
        assert [await _status(url, h) for h in refused] == [403] * len(refused)
        assert await _status(url, {"Host": "evil.example"}, path="/metrics") == 403


async def test_with_keys_only_listed_or_loopback_pages_open_sessions(tmp_path: Path) -> None:
    settings = {"api_keys": ["k1"], "allowed_origins": ["https://app.example.com/"]}
    async with running_server(tmp_path, fake_engines(), voice=settings) as (url, _, _):
        key = {"Authorization": "Bearer k1"}
        assert await _status(url, {**key, "Origin": "https://app.example.com"}) == 101
        assert await _status(url, {**key, "Origin": "http://localhost:8080"}) == 101
        assert await _status(url, {**key, "Host": "voice.example.com"}) == 101  # a real name
        assert await _status(url, {**key, "Origin": "https://evil.example"}) == 403
        assert await _status(url, {"Origin": "https://app.example.com"}) == 401  # still a key


async def test_a_large_append_is_decoded_off_the_loop_and_heard(tmp_path: Path) -> None:
    async with running_server(tmp_path, fake_engines()) as (url, _, _):
        client = await RealtimeClient.open(url)
        data = pcm.encode(utterance(), 16_000, "audio/pcm")
        audio = base64.b64encode(data).decode()
        assert len(audio) > voice_connection._DECODE_INLINE_MAX
        await client.send({"type": "input_audio_buffer.append", "audio": audio})
        done = await client.wait_for("response.done")
        await client.close()
    assert done["response"]["status"] == "completed"


# --- building blocks ------------------------------------------------------------------------------


def test_the_timeline_keeps_its_clock_when_it_forgets() -> None:
    t = Timeline()
    ramp = np.arange(48_000, dtype=np.float32)
    for piece in np.split(ramp, [100, 16_000, 16_001, 40_000]):  # uneven appends
        t.append(piece)
    assert t.start_ms == 0 and t.end_ms == 3000 and t.kept_ms == 3000
    assert np.array_equal(t.slice(999.5, 1500), ramp[15_992:24_000])
    t.keep_last(1000)
    assert t.start_ms == 2000 and t.end_ms == 3000
    assert np.array_equal(t.slice(0, 2500), ramp[32_000:40_000])  # clipped to what is kept
    assert np.array_equal(t.slice(2000, 9999), ramp[32_000:])
    t.clear()
    assert t.kept_ms == 0 and t.start_ms == t.end_ms == 3000 and len(t.slice(0, 9999)) == 0
    t.append(ramp[:160])
    assert t.end_ms == 3010 and np.array_equal(t.slice(3000, 3010), ramp[:160])


def test_a_kept_slice_does_not_hold_the_whole_buffer() -> None:
    t = Timeline()
    t.append(np.zeros(16_000 * 60, dtype=np.float32))
    piece = t.slice(0, 10)
    assert piece.base is None and piece.nbytes == 160 * 4
    t.keep_last(10)
    t.append(np.ones(16, dtype=np.float32))
    kept = t.slice(t.start_ms, t.end_ms)
    assert t.kept_ms == 11 and len(kept) == 176 and kept.base is None


def test_the_rate_limit_refills_with_the_clock() -> None:
    limit = AudioRateLimit(4.0, 1000)
    assert limit.take(1000, 0.0) and not limit.take(1, 0.0)
    assert not limit.take(600, 0.125)  # 500 ms of audio refilled in 125 ms
    assert limit.take(500, 0.125) and limit.take(1000, 100.0)  # the refill stops at the burst
    assert not limit.take(1, 100.0)


def test_base64_duration_is_read_off_the_length() -> None:
    for raw in (b"", b"\xff", b"\xff\xff", b"\xff" * 8000):
        text = base64.b64encode(raw).decode()
        assert pcm.base64_ms(text, "audio/pcmu") == len(raw) / 8
    assert pcm.base64_ms(base64.b64encode(bytes(48_000)).decode(), "audio/pcm") == 1000


# --- captured cases ------------------------------------------------------------------------------


def _long_turn(seconds: float) -> TurnRecord:
    record = TurnRecord(session_id="sess_1", turn_id="turn_long", recovery=["no_speech"])
    record.evidence.audio = tone(seconds * 1000)
    record.evidence.transcript = record.evidence.heard = "la la la"
    return record


@pytest.mark.reliability("input", "a very long turn captured as a case: its audio capped")
def test_a_case_keeps_only_the_first_seconds_of_a_long_turn(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, capture={"enabled": True})
    store = CaseStore(settings.cases_dir)
    recorder = CaseRecorder(store, settings.capture, settings, max_audio_s=1.0)
    record = _long_turn(3)
    assert recorder.offer(record)
    recorder.close()
    assert len(record.evidence.audio) == 3 * 16_000  # the turn itself is left as it was
    (folder,) = store.folders()
    data = json.loads((folder / CASE_FILE).read_text())
    assert data["audio_ms"] == 1000 and data["audio_cut_from_ms"] == 3000
    samples, rate = pcm.read_wav(folder / AUDIO_FILE)
    assert (len(samples), rate) == (16_000, 16_000)
    # Its transcript covers three seconds, the audio one: not an eval item as it is...
    plain = export(store, tmp_path / "set")
    assert plain.written == 0
    assert list(plain.skipped) == ["audio cut short (the transcript covers more)"]
    # ...but it is with a reference made from the audio kept.
    assert export(store, tmp_path / "set2", reference=lambda audio: "la").written == 1


def test_the_case_queue_holds_a_bounded_amount_of_audio(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, capture={"enabled": True})
    store = CaseStore(settings.cases_dir)
    recorder = CaseRecorder(store, settings.capture, settings, max_queued_audio_s=1.0)
    assert not recorder.offer(_long_turn(2))  # more than the queue may ever hold
    assert recorder.dropped == 1
    assert recorder.offer(_long_turn(0.5))
    recorder.close()
    assert recorder.written == 1
