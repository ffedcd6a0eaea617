"""`castwork talk`: play a WAV into a Realtime server like a microphone and report the turn."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from voice import audio as pcm
from voice.clients.realtime import RealtimeClient


def _describe(ev: dict[str, Any]) -> str:
    t: str = ev["type"]
    if t.endswith("transcription.completed"):
        return f"{t}: {ev['transcript']!r}"
    if t == "response.output_audio_transcript.done":
        return f"{t}: {ev['transcript']!r}"
    if t == "response.done":
        r = ev["response"]
        return f"{t}: {r['status']} {r.get('status_details') or ''} usage={r.get('usage')}"
    if t == "error":
        return f"{t}: {ev['error'].get('code')}: {ev['error'].get('message')}"
    if t.startswith("input_audio_buffer.speech"):
        return f"{t}: {ev.get('audio_start_ms', ev.get('audio_end_ms'))} ms"
    return t


async def talk(
    wav: Path, *, url: str, api_key: str | None, out: Path, timeout_s: float = 60.0
) -> int:
    samples, rate = pcm.read_wav(wav)
    speech_s = len(samples) / rate
    client = await RealtimeClient.open(url, api_key=api_key)
    print(f"connected to {url}; streaming {speech_s:.2f} s of {wav.name} at real-time pace")
    t0 = time.monotonic()
    last_sample_at = await client.stream(samples, rate)
    try:
        # Keep the "microphone" open with silence, as a real client would, until the answer ends.
        async with client.silence(rate):
            done = await client.wait_for("response.done", timeout=timeout_s)
    except (TimeoutError, ConnectionError) as exc:
        print(f"no answer: {exc}")
        return 1
    finally:
        await client.close()

    deltas = 0
    for r in client.events:
        if r.event["type"] in (
            "response.output_audio.delta",
            "response.output_audio_transcript.delta",
        ):
            deltas += 1
            continue
        print(f"  +{(r.at - t0) * 1000:7.0f} ms  {_describe(r.event)}")
    print(f"  ({deltas} audio/transcript deltas not shown)")
    reply = client.reply_audio()
    await asyncio.to_thread(out.write_bytes, pcm.wav_bytes(reply, pcm.INTERNAL_RATE))
    print(f"reply: {len(reply) / pcm.INTERNAL_RATE:.2f} s of audio saved to {out}")
    print(_breakdown(client, last_sample_at))
    return 0 if done["response"]["status"] == "completed" else 1


def _breakdown(client: RealtimeClient, end_of_clip: float) -> str:
    """Latency as the client sees it, from the moment the clip's last sample was sent."""

    def first(type_: str) -> float | None:
        return next((r.at for r in client.events if r.event["type"] == type_), None)

    marks = [
        ("speech_stopped (endpointing)", first("input_audio_buffer.speech_stopped")),
        ("transcript (ASR)", first("conversation.item.input_audio_transcription.completed")),
        ("response.created", first("response.created")),
        ("first reply text", first("response.output_audio_transcript.delta")),
        ("first reply audio (voice-to-voice)", first("response.output_audio.delta")),
        ("response.done", first("response.done")),
    ]
    lines = ["latency from the end of the clip:"]
    for name, at in marks:
        lines.append(
            f"  {name:<36} {'-' if at is None else f'{(at - end_of_clip) * 1000:7.0f} ms'}"
        )
    return "\n".join(lines)
