"""Voice-to-voice latency of `castwork voice` on the embedded models.

Starts the real server in its own process, then N simulated clients (default: 1, then 4)
stream spoken clips at real-time pace like microphones, each waiting for the answer before
its next turn. Prints voice-to-voice P50/P95 (server's turn log: last speech frame in ->
first answer audio out; and the client's view: last clip sample sent -> first audio delta
received) and the median split per stage.

``--compare``: then the same on a second server with the defaults of 2026-12-06 (server_vad,
500 ms of silence; Whisper's full 30 s window; any speech over an answer interrupts it), so
the two sit side by side in one run.

    .venv/bin/python bench/voice_latency.py [--sessions 1 4] [--turns 6] [--compare] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from voice.engines.factory import build_tts
from voice.monitoring import evalset, loadtest, turnlog_reader, turnstats
from workers.settings import load_settings

# The defaults before semantic_vad, the fitted Whisper window and backchannels (#16).
BEFORE = {
    "CASTWORK_VAD__TURN_DETECTION": "server_vad",
    "CASTWORK_ASR__MIN_WINDOW_S": "0",
    "CASTWORK_VAD__BARGE_IN_MIN_MS": "0",
}


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
    results = await asyncio.gather(
        *(loadtest.play_session(url, clips, turns, offset=i * 3) for i in range(sessions))
    )
    return [v for r in results for v in r.v2v_ms]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--turns", type=int, default=6, help="turns per session in each phase")
    ap.add_argument("--out", type=Path, help="keep the turn log and server log here")
    ap.add_argument("--compare", action="store_true", help="also run the 2026-12-06 defaults")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    clips = evalset.build(build_tts(settings), settings.data_dir / "evalset")
    print(
        f"# castwork voice latency — {os.cpu_count()} cores, clips: {len(clips)} Piper-spoken "
        "sentences"
    )
    lines: list[str] = []
    servers: list[tuple[str, Path, dict[str, str]]] = [("defaults", work / "defaults", {})]
    if args.compare:
        servers.append(("2026-12-06 defaults", work / "before", BEFORE))
    for name, folder, env in servers:
        server = loadtest.ServerProcess(folder, env=env)
        with server:
            for n in args.sessions:
                seen = {t.session_id for t in server.turns()}
                t0 = time.monotonic()
                client_v2v = asyncio.run(run_phase(server.url, clips, n, args.turns))
                time.sleep(0.5)
                phase = [t for t in server.turns() if t.session_id not in seen]
                lines += report(
                    f"{name}, {n} concurrent session(s), {time.monotonic() - t0:.0f} s",
                    phase,
                    client_v2v,
                )
                print("\n".join(lines[-4:]), flush=True)
        print(f"turn log: {server.turn_log}")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
