"""Hostile voice clients: how much server memory can one of them take?

Each scenario runs against a fresh voice server process (scripted fake engines: the bounds
under test are the session's and the WebSocket shell's, not the models'). Its resident memory
is read from outside, off /proc/PID/status: VmRSS after a warm-up turn (baseline, where the
peak VmHWM is reset too), VmRSS once the server has handled the whole flood with the session
still open (held), the peak during the flood, and VmRSS after the client left. One client:

  - 40 MiB of silence as fast as the socket takes it, in appends of 256 KiB of audio:
    audio/pcmu and audio/pcm (PCM16 24 kHz), without turn detection (manual) and with
    server VAD;
  - 1000 conversation.item.create of 1 MB of text, and 1000 of 20 000 characters;

first with the default limits, then the audio again with the rate limit lifted to 1000x real
time (an hour's burst), where the buffer bounds must hold nearly alone. A row passes when neither held nor peak grew past --limit-mb.

    .venv/bin/python bench/voice_hostile.py [--mib 40] [--items 1000] [--limit-mb 30] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed

from voice.clients.realtime import RealtimeClient
from voice.monitoring.loadtest import free_port
from voice.testing.fakes import silence, tone

CHUNK = 256 * 1024
SILENCE_BYTE = {"audio/pcmu": b"\xff", "audio/pcm": b"\x00"}
RATE_LIFTED = {"max_audio_rate": 1000, "audio_burst_s": 3600}


@dataclass
class Row:
    scenario: str
    limits: str
    sent_mb: float = 0.0
    seconds: float = 0.0
    told: dict[str, int] = field(default_factory=dict)  # error code -> how many
    close_code: int | None = None
    rss_mb: float = 0.0  # baseline
    held_mb: float = 0.0  # growth, session still open
    peak_mb: float = 0.0  # growth of the peak during the flood
    after_mb: float = 0.0  # growth once the client left


# --- the server process ----------------------------------------------------------------------


async def _serve(port: int, voice: dict[str, Any], work: Path) -> None:
    from voice.runtime.latency import TurnLog
    from voice.runtime.server import VoiceServer
    from voice.runtime.turns import Engines, TurnPolicy
    from voice.testing.fakes import EnergyVad, FakeChat, FakeSynthesizer, FakeTranscriber
    from workers.settings import load_settings

    settings = load_settings(data_dir=work, voice=voice)
    engines = Engines(
        asr=FakeTranscriber(texts=["what time is it"]),
        chat=[FakeChat()],
        tts=FakeSynthesizer(),
        tts_fallback=FakeSynthesizer(name="fake-fallback"),
        apology=(tone(500), 16_000),
    )
    server = VoiceServer(
        settings, engines, EnergyVad(), policy=TurnPolicy(), turn_log=TurnLog(work / "turns.jsonl")
    )
    await server.start("127.0.0.1", port)
    await asyncio.Event().wait()  # until the bench kills it


class Server:
    def __init__(self, voice: dict[str, Any], work: Path) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/v1/realtime"
        args = ["--serve", str(self.port), "--voice", json.dumps(voice), "--work", str(work)]
        self.log = open(work / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start; see {work / 'server.log'}") from None
                time.sleep(0.2)

    def status_mb(self, name: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(name)

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


# --- the clients ------------------------------------------------------------------------------


async def _warm_up(url: str) -> None:
    """One ordinary spoken turn: imports, pools and caches a first session makes."""
    client = await RealtimeClient.open(url)
    await client.stream(
        np.concatenate([silence(200), tone(800), silence(900)]), 16_000, realtime=False
    )
    await client.wait_for("response.done")
    await client.close()


async def _audio_flood(client: RealtimeClient, fmt: str, mode: str, mib: int) -> float:
    td = None if mode == "manual" else {"type": "server_vad"}
    session = {
        "type": "realtime",
        "audio": {"input": {"format": {"type": fmt}, "turn_detection": td}},
    }
    await client.send({"type": "session.update", "session": session})
    await client.wait_for("session.updated")
    audio = base64.b64encode(SILENCE_BYTE[fmt] * CHUNK).decode()
    message = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
    sent = 0
    with contextlib.suppress(ConnectionClosed):
        for _ in range(mib * (1 << 20) // CHUNK):
            await client.ws.send(message)
            sent += CHUNK
    return sent / 1e6


async def _item_flood(client: RealtimeClient, chars: int, items: int) -> float:
    part = {"type": "input_text", "text": "x" * chars}
    message = json.dumps(
        {"type": "conversation.item.create", "item": {"role": "user", "content": [part]}}
    )
    sent = 0
    with contextlib.suppress(ConnectionClosed):
        for _ in range(items):
            await client.ws.send(message)
            sent += chars
    return sent / 1e6


async def _fence(client: RealtimeClient) -> None:
    """Wait until the server has handled all that was sent (it answers in order)."""
    with contextlib.suppress(ConnectionClosed):
        await client.send({"type": "conversation.item.delete", "item_id": "-", "event_id": "fence"})
    async with asyncio.timeout(300):
        while client.ws.close_code is None and not any(  # noqa: ASYNC110
            r.event.get("error", {}).get("event_id") == "fence" for r in client.events
        ):
            await asyncio.sleep(0.05)


async def _scenario(server: Server, row: Row, flood: Any) -> None:
    await _warm_up(server.url)
    await asyncio.sleep(0.5)
    server.reset_peak()
    row.rss_mb = base = server.status_mb("VmRSS")
    client = await RealtimeClient.open(server.url)
    t0 = time.monotonic()
    row.sent_mb = await flood(client)
    await _fence(client)
    row.seconds = round(time.monotonic() - t0, 1)
    row.held_mb = server.status_mb("VmRSS") - base
    row.peak_mb = server.status_mb("VmHWM") - base
    await client.close()
    row.close_code = client.ws.close_code if client.ws.close_code not in (1000, None) else None
    row.told = dict(
        Counter(
            r.event["error"]["code"]
            for r in client.events
            if r.event["type"] == "error" and r.event["error"].get("event_id") != "fence"
        )
    )
    await asyncio.sleep(1.0)  # the session's teardown, and the heap given back
    row.after_mb = server.status_mb("VmRSS") - base


def _scenarios(mib: int, items: int) -> list[tuple[str, str, dict[str, Any], Any]]:
    out: list[tuple[str, str, dict[str, Any], Any]] = []
    for limits, voice in (("default", {}), ("rate 1000x", RATE_LIFTED)):
        for fmt, mode in (
            ("audio/pcmu", "manual"),
            ("audio/pcmu", "server_vad"),
            ("audio/pcm", "manual"),
            ("audio/pcm", "server_vad"),
        ):
            out.append(
                (
                    f"{mib} MiB {fmt.removeprefix('audio/')} silence, {mode}",
                    limits,
                    voice,
                    lambda c, fmt=fmt, mode=mode: _audio_flood(c, fmt, mode, mib),
                )
            )
        if limits == "default":
            for chars, label in ((1_000_000, "1 MB"), (20_000, "20 000 chars")):
                out.append(
                    (
                        f"{items} items of {label}",
                        limits,
                        voice,
                        lambda c, chars=chars: _item_flood(c, chars, items),
                    )
                )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mib", type=int, default=40)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--limit-mb", type=float, default=30.0)
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--voice", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve, json.loads(args.voice), args.work))
        return 0

    print(f"# castwork voice: one hostile client, server RSS growth (limit {args.limit_mb:g} MB)")
    print(
        f"{'scenario':34}{'limits':15}{'sent MB':>9}{'s':>6}{'RSS':>7}{'held':>7}{'peak':>7}"
        f"{'after':>7}  told (close)"
    )
    rows: list[Row] = []
    for name, limits, voice, flood in _scenarios(args.mib, args.items):
        with tempfile.TemporaryDirectory(prefix="castwork-hostile-") as tmp:
            server = Server(voice, Path(tmp))
            try:
                row = Row(name, limits)
                asyncio.run(_scenario(server, row, flood))
            finally:
                server.stop()
        rows.append(row)
        told = ", ".join(f"{code} x{n}" for code, n in row.told.items()) or "-"
        closed = f" (closed {row.close_code})" if row.close_code else ""
        print(
            f"{row.scenario:34}{row.limits:15}{row.sent_mb:>9.0f}{row.seconds:>6.1f}"
            f"{row.rss_mb:>7.0f}{row.held_mb:>+7.1f}{row.peak_mb:>+7.1f}{row.after_mb:>+7.1f}"
            f"  {told}{closed}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    over = [r for r in rows if max(r.held_mb, r.peak_mb) > args.limit_mb]
    print(f"{len(rows) - len(over)}/{len(rows)} within {args.limit_mb:g} MB (held and peak)")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
