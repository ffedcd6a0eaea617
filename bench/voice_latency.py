"""Voice-to-voice latency of `castwork voice` on the embedded models.

Starts the real server in its own process, then N simulated clients (default: 1, then 4)
stream spoken clips at real-time pace like microphones, each waiting for the answer before
its next turn. Prints voice-to-voice P50/P95 (server's turn log: last speech frame in ->
first answer audio out; and the client's view: last clip sample sent -> first audio delta
received) and the median split per stage.

    .venv/bin/python bench/voice_latency.py [--sessions 1 4] [--turns 6] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from voice import evalset, turnlog_reader, turnstats
from voice.client import CHUNK_MS, RealtimeClient
from voice.config import load_settings
from voice.factory import build_tts


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_client(url: str, clips: list[evalset.Clip], turns: int, offset: int) -> list[float]:
    """Plays ``turns`` clips; returns the client-side voice-to-voice of each, in ms."""
    client = await RealtimeClient.open(url)
    silence = np.zeros(int(16_000 * CHUNK_MS / 1000), dtype=np.float32)
    measured = []
    try:
        for t in range(turns):
            clip = clips[(offset + t) % len(clips)]
            after = len(client.events)
            end = await client.stream(clip.audio(), 16_000)
            feeder = asyncio.create_task(_keep_silent(client, silence))
            try:
                done = await client.wait_for("response.done", after=after, timeout=60)
            finally:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
            first = next(
                (
                    r.at
                    for r in client.events[after:]
                    if r.event["type"] == "response.output_audio.delta"
                ),
                None,
            )
            if first is not None and done["response"]["status"] == "completed":
                measured.append((first - end) * 1000)
            await client.stream(
                np.zeros(16_000 // 2, dtype=np.float32), 16_000
            )  # a breath between turns
    finally:
        await client.close()
    return measured


async def _keep_silent(client: RealtimeClient, silence: np.ndarray) -> None:
    while True:
        await client.stream(silence, 16_000)


def read_turns(path: Path) -> list[turnstats.Turn]:
    return turnlog_reader.read([path]).turns


def report(label: str, turns: list[turnstats.Turn], client_v2v: list[float]) -> list[str]:
    """The phase's figures, from the same code as `castwork latency` (numpy percentiles)."""
    group = turnstats.group_of(label, turns)
    server = group.stats.get("voice_to_voice")
    client = turnstats.Stats.of(client_v2v)
    nan = float("nan")
    recovery = Counter(code for t in turns for code in t.recovery)  # every time a branch ran
    lines = [
        f"## {label}: {len(turns)} turns, outcomes {group.outcomes}, recovery {dict(recovery)}",
        f"voice-to-voice (server)  P50 {server.p50 if server else nan:6.0f} ms   P95 {server.p95 if server else nan:6.0f} ms   max {server.max if server else nan:6.0f} ms",
        f"voice-to-voice (client)  P50 {client.p50 if client else nan:6.0f} ms   P95 {client.p95 if client else nan:6.0f} ms",
        "stage medians (ms): "
        + "  ".join(f"{s} {group.stats[s].p50:.0f}" for s in turnstats.STAGES if s in group.stats),
    ]
    return lines


async def run_phase(url: str, clips: list[evalset.Clip], sessions: int, turns: int) -> list[float]:
    results = await asyncio.gather(*(one_client(url, clips, turns, i * 3) for i in range(sessions)))
    return [v for r in results for v in r]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--turns", type=int, default=6, help="turns per session in each phase")
    ap.add_argument("--out", type=Path, help="keep the turn log and server log here")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    clips = evalset.build(build_tts(settings), settings.data_dir / "evalset")
    port = _port()
    turn_log = work / "turns.jsonl"
    turn_log.unlink(missing_ok=True)
    env = {**os.environ, "CASTWORK_LOG__TURN_LOG": str(turn_log), "CASTWORK_VOICE__MAX_SESSIONS": "64",
           "CASTWORK_VOICE__MAX_SESSIONS_PER_KEY": "64"}  # fmt: skip
    server_log = open(work / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    castwork = Path(sys.executable).with_name("castwork")
    server = subprocess.Popen(
        [str(castwork), "voice", "--port", str(port)], env=env, stdout=server_log, stderr=server_log
    )
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None:
                    print(f"server exited; see {work / 'server.log'}")
                    return 1
                time.sleep(0.5)
        print(
            f"# castwork voice latency — {os.cpu_count()} cores, clips: {len(clips)} Piper-spoken sentences"
        )
        lines: list[str] = []
        for n in args.sessions:
            seen = {t.session_id for t in read_turns(turn_log)} if turn_log.exists() else set()
            t0 = time.monotonic()
            client_v2v = asyncio.run(run_phase(url, clips, n, args.turns))
            time.sleep(0.5)
            phase = [t for t in read_turns(turn_log) if t.session_id not in seen]
            lines += report(
                f"{n} concurrent session(s), {time.monotonic() - t0:.0f} s", phase, client_v2v
            )
            print("\n".join(lines[-4:]), flush=True)
    finally:
        server.terminate()
        server.wait(10)
        server_log.close()
    print(f"turn log: {turn_log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
