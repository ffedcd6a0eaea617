"""Does failure-case capture slow the live turn? Voice-to-voice with capture off and on, side by side.

Two real `castwork voice` servers (embedded models) run at once on this machine: one with
capture off, one capturing *every* turn (capture.slow_ms = 1, audio kept: the worst case, a
WAV and a JSON written per turn). They are driven in turn, never together, in rounds whose
order alternates (off/on, on/off, ...), so slow drift of the machine falls on both alike. Each
round: --sessions callers at once, --turns Piper-spoken clips each at real-time pace. Both
servers decode greedily (llm.temperature = 0), so both give the same answers.

Printed: voice-to-voice P50/P95 per side (server-side from the turn logs, client-side too),
the P95 change in percent with its 95% bootstrap interval, cases written and dropped. The
target is a P95 change within 5%.

On 2 shared cores a P95 over a few dozen turns swings by tens of percent on its own, so the
side-by-side run can say "within noise" but not "under 5%". The bench therefore also measures
what capture costs directly, in this process with the server's own recorder: what the live
turn pays to hand a case over (``CaseRecorder.offer``), and the CPU the writer thread spends per
case (masking, JSON, WAV, fsyncs) — the most it can take from the turns running beside it.
``--direct-only`` runs just that part (seconds).

    .venv/bin/python bench/capture_load.py [--rounds 6] [--sessions 2] [--turns 3] [--json FILE]
                                           [--direct-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from castwork.cli import whole_number
from voice import audio as pcm
from voice.core.record import TurnRecord
from voice.engines.factory import build_tts
from voice.learning.cases import CaseRecorder, CaseStore
from voice.monitoring import evalset, loadtest, turnstats
from workers.settings import Settings, load_settings


def _dropped(server: loadtest.ServerProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "castwork_cases_dropped_total"
    )


async def _round(
    server: loadtest.ServerProcess, clips: list[evalset.Clip], sessions: int, turns: int, r: int
) -> list[float]:
    results = await asyncio.gather(
        *(
            loadtest.play_session(server.url, clips, turns, offset=r * 7 + i * 3)
            for i in range(sessions)
        )
    )
    return [v for res in results for v in res.v2v_ms]


def _side(
    server: loadtest.ServerProcess, client_v2v: list[float], warm: set[str]
) -> dict[str, Any]:
    turns = [t for t in server.turns() if t.session_id not in warm]
    v2v = [t.durations_ms["voice_to_voice"] for t in turns if "voice_to_voice" in t.durations_ms]
    s, c = turnstats.Stats.of(v2v), turnstats.Stats.of(client_v2v)
    return {
        "turns": len(turns),
        "server_v2v_ms": v2v,
        "server_p50": None if s is None else round(s.p50, 1),
        "server_p95": None if s is None else round(s.p95, 1),
        "client_p50": None if c is None else round(c.p50, 1),
        "client_p95": None if c is None else round(c.p95, 1),
    }


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    settings = load_settings()
    clips = evalset.build(build_tts(settings), settings.data_dir / "evalset" / "bench")
    cases_dir = work / "cases"
    # Greedy decoding on both: the same answers, so the same work, on each side (at the default
    # temperature answer lengths vary several-fold and swamp a few-percent difference).
    same = {"CASTWORK_LLM__TEMPERATURE": "0"}
    off = loadtest.ServerProcess(work / "off", env=same)
    on = loadtest.ServerProcess(
        work / "on",
        env={
            **same,
            "CASTWORK_CAPTURE__ENABLED": "true",
            "CASTWORK_CAPTURE__SLOW_MS": "1",
            "CASTWORK_CAPTURE__KEEP_AUDIO_WITH_PII": "true",
            "CASTWORK_CAPTURE__DIR": str(cases_dir),
        },
    )
    client: dict[str, list[float]] = {"off": [], "on": []}
    with off, on:
        # A warm-up round each, not counted: first decodes and first answers are slower.
        warm: dict[str, set[str]] = {}
        for name, server in (("off", off), ("on", on)):
            await _round(server, clips, args.sessions, 1, 99)
            await asyncio.sleep(0.5)
            warm[name] = {t.session_id for t in server.turns()}
        t0 = time.monotonic()
        for r in range(args.rounds):
            order = [("off", off), ("on", on)] if r % 2 == 0 else [("on", on), ("off", off)]
            for name, server in order:
                client[name] += await _round(server, clips, args.sessions, args.turns, r)
                print(f"  round {r + 1}/{args.rounds} {name}: done", file=sys.stderr)
        seconds = time.monotonic() - t0
        await asyncio.sleep(1.0)  # the writer thread finishes the last cases
        dropped = _dropped(on)
        sides = {
            "off": _side(off, client["off"], warm["off"]),
            "on": _side(on, client["on"], warm["on"]),
        }
    a, b = sides["off"]["server_v2v_ms"], sides["on"]["server_v2v_ms"]
    p95_a, p95_b = float(np.percentile(a, 95)), float(np.percentile(b, 95))
    lo, hi = turnstats.percentile_change_ci(a, b, 95)
    written = sum(1 for p in cases_dir.iterdir() if p.is_dir()) if cases_dir.is_dir() else 0
    return {
        "cores": os.cpu_count(),
        "rounds": args.rounds,
        "sessions": args.sessions,
        "turns_per_session": args.turns,
        "seconds": round(seconds, 1),
        "off": {k: v for k, v in sides["off"].items() if k != "server_v2v_ms"},
        "on": {k: v for k, v in sides["on"].items() if k != "server_v2v_ms"},
        "p95_change_pct": round(100 * (p95_b - p95_a) / p95_a, 1),
        "p95_change_ci_pct": [round(100 * lo / p95_a, 1), round(100 * hi / p95_a, 1)],
        "cases_written": written,
        "cases_dropped": dropped,
        "case_bytes": sum(p.stat().st_size for p in cases_dir.rglob("*") if p.is_file())
        if cases_dir.is_dir()
        else 0,
    }


def direct_cost(settings: Settings, clip: evalset.Clip, work: Path, n: int = 100) -> dict[str, Any]:
    """What one case costs: the live turn's hand-over, and the writer thread's CPU for it."""
    capture = settings.capture.model_copy(update={"slow_ms": 1, "keep_audio_with_pii": True})
    recorder = CaseRecorder(CaseStore(work, max_cases=n + 10), capture, settings)
    audio = clip.audio()
    offers: list[float] = []
    for i in range(n):
        r = TurnRecord(session_id="sess_bench", turn_id=f"turn_{i:06d}", recovery=["llm_fallback"])
        r.mark("speech_end", 10.0)
        r.mark("first_audio_sent", 11.5)
        r.evidence.audio, r.evidence.transcript = audio, clip.text
        r.evidence.heard, r.evidence.reply = clip.text, "Sorry, I did not catch that. " * 3
        r.evidence.spoken = r.evidence.reply
        t0 = time.perf_counter()
        recorder.offer(r)
        offers.append(time.perf_counter() - t0)
        # One case at a time, as turns finish: the writer's CPU is measured per case.
        while recorder.written + recorder.dropped < i + 1:
            time.sleep(0.001)
    cpu = recorder.cpu_seconds
    recorder.close()
    return {
        "cases": n,
        "audio_s": round(len(audio) / pcm.INTERNAL_RATE, 2),
        "offer_us_p50": round(1e6 * float(np.percentile(offers, 50)), 1),
        "offer_us_max": round(1e6 * max(offers), 1),
        "writer_cpu_ms_per_case": round(1000 * cpu / n, 2),
    }


def _print_direct(d: dict[str, Any], v2v_p50: float | None) -> None:
    share = (
        f" ({100 * d['writer_cpu_ms_per_case'] / v2v_p50:.2f}% of the capturing side's"
        " voice-to-voice P50)"
        if v2v_p50
        else ""
    )
    print(
        f"direct cost per case ({d['cases']} cases, {d['audio_s']} s of audio each): the live "
        f"turn's hand-over {d['offer_us_p50']} µs P50 (max {d['offer_us_max']} µs); the writer "
        f"thread's CPU {d['writer_cpu_ms_per_case']} ms{share}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=whole_number(1), default=6)
    ap.add_argument(
        "--sessions", type=whole_number(1), default=2, help="callers at once (2: under capacity)"
    )
    ap.add_argument("--turns", type=whole_number(1), default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--direct-only", action="store_true", help="only the direct cost (seconds)")
    args = ap.parse_args()
    settings = load_settings()
    clip = evalset.build(build_tts(settings), settings.data_dir / "evalset" / "bench")[0]
    with tempfile.TemporaryDirectory(prefix="castwork-capture-") as tmp:
        direct = direct_cost(settings, clip, Path(tmp) / "direct")
        if args.direct_only:
            _print_direct(direct, None)
            return 0
        r = asyncio.run(run(args, Path(tmp)))
    r["direct"] = direct
    print(
        f"# failure-case capture under load — {r['cores']} cores, {r['rounds']} rounds × "
        f"{r['sessions']} callers × {r['turns_per_session']} turns per side ({r['seconds']:.0f} s)"
    )
    print("| capture | turns | server v2v P50 / P95 ms | client v2v P50 / P95 ms |")
    print("|---|---|---|---|")
    for name in ("off", "on"):
        s = r[name]
        print(
            f"| {name} | {s['turns']} | {s['server_p50']:.0f} / {s['server_p95']:.0f} | "
            f"{s['client_p50']:.0f} / {s['client_p95']:.0f} |"
        )
    lo, hi = r["p95_change_ci_pct"]
    noise = "within noise" if lo <= 0 <= hi else "a real difference"
    target = "meets" if r["p95_change_pct"] <= 5 else "misses"
    print(
        f"\nP95 change with capture on: {r['p95_change_pct']:+.1f}% (95% CI {lo:+.1f}% to "
        f"{hi:+.1f}%: {noise}); {target} the 5% target"
    )
    print(
        f"cases written {r['cases_written']} ({r['case_bytes'] / 1e6:.1f} MB), "
        f"dropped {r['cases_dropped']:.0f}"
    )
    _print_direct(direct, r["on"]["server_p50"])
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
