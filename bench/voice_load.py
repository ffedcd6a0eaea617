"""Voice capacity of this machine: ramp concurrent sessions until voice-to-voice P95 breaks.

Ramp: the real `castwork voice` (embedded models) in its own process; at each level N
simulated callers speak --turns Piper-spoken clips at real-time pace, each waiting for the
answer. The level's client-side voice-to-voice P95 (last clip sample sent -> first answer
audio received) is compared with --threshold-ms; the capacity is the last level under it.
The ramp stops at the first level over it and prints which stages grew there.

Admission: the server is restarted with voice.max_sessions = capacity; the admitted callers
talk alone, then again while --extra more keep dialing in once a second: every extra attempt
must get an `error` (session_limit_reached) and a close, and the admitted callers must keep
the latency they had alone (both phases side by side on one server).

    .venv/bin/python bench/voice_load.py [--threshold-ms 2000] [--turns 3] [--max 16]
                                         [--json FILE] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voice import evalset, loadtest, turnstats
from voice.config import load_settings
from voice.factory import build_tts

LEVELS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)


async def _level(
    url: str, clips: list[evalset.Clip], n: int, turns: int
) -> list[loadtest.SessionResult]:
    return list(
        await asyncio.gather(
            *(loadtest.play_session(url, clips, turns, offset=i * 5) for i in range(n))
        )
    )


def _stage_medians(turns: list[turnstats.Turn]) -> dict[str, float]:
    group = turnstats.group_of("level", turns)
    return {s: round(group.stats[s].p50) for s in turnstats.STAGES if s in group.stats}


def _figures(
    n: int, results: list[loadtest.SessionResult], turns: list[turnstats.Turn], seconds: float
) -> dict[str, Any]:
    v2v = turnstats.Stats.of([v for r in results for v in r.v2v_ms])
    statuses = [s for r in results for s in r.statuses]
    return {
        "sessions": n,
        "turns": len(statuses),
        "completed": statuses.count("completed"),
        "refused": sum(r.refused is not None for r in results),
        "p50_ms": round(v2v.p50) if v2v else None,
        "p95_ms": round(v2v.p95) if v2v else None,
        "outcomes": dict(turnstats.group_of("level", turns).outcomes),
        "stage_p50_ms": _stage_medians(turns),
        "seconds": round(seconds, 1),
    }


def ramp(
    work: Path, clips: list[evalset.Clip], threshold: float, turns: int, top: int
) -> tuple[list[dict[str, Any]], int]:
    levels: list[dict[str, Any]] = []
    capacity = 0
    with loadtest.ServerProcess(work / "ramp") as server:
        asyncio.run(_level(server.url, clips, 1, 1))  # warm-up: first decodes are slow
        for n in (level for level in LEVELS if level <= top):
            seen = {t.session_id for t in server.turns()}
            t0 = time.monotonic()
            results = asyncio.run(_level(server.url, clips, n, turns))
            time.sleep(0.5)
            new = [t for t in server.turns() if t.session_id not in seen]
            fig = _figures(n, results, new, time.monotonic() - t0)
            levels.append(fig)
            ok = fig["p95_ms"] is not None and fig["p95_ms"] <= threshold
            ok = ok and fig["completed"] == fig["turns"] == n * turns
            print(
                f"{n:3d} sessions: P50 {fig['p50_ms']} ms, P95 {fig['p95_ms']} ms, "
                f"{fig['completed']}/{n * turns} completed, outcomes {fig['outcomes']}"
                f" -> {'held' if ok else 'BROKEN'}",
                flush=True,
            )
            if not ok:
                break
            capacity = n
    return levels, capacity


def admission(
    work: Path, clips: list[evalset.Clip], capacity: int, extra: int, turns: int
) -> dict[str, Any]:
    """At max_sessions = capacity: the admitted callers alone, then the same callers while
    ``extra`` more keep dialing in (one attempt a second each) — side by side in one server."""
    env = {
        "CASTWORK_VOICE__MAX_SESSIONS": str(capacity),
        "CASTWORK_VOICE__MAX_SESSIONS_PER_KEY": str(capacity),
    }
    with loadtest.ServerProcess(work / "admission", env) as server:
        asyncio.run(_level(server.url, clips, 1, 1))

        async def phase(dialers: int) -> tuple[list[loadtest.SessionResult], list[Any]]:
            admitted = [
                asyncio.create_task(loadtest.play_session(server.url, clips, turns, offset=i * 5))
                for i in range(capacity)
            ]
            await asyncio.sleep(0.5)  # the admitted ones hold their places first
            refusals: list[Any] = []

            async def dial() -> None:
                while not all(t.done() for t in admitted):
                    r = await loadtest.play_session(server.url, clips, 1)
                    refusals.append((r.refused, r.close_code))
                    await asyncio.sleep(1.0)

            dialing = [asyncio.create_task(dial()) for _ in range(dialers)]
            results = list(await asyncio.gather(*admitted))
            await asyncio.gather(*dialing)
            return results, refusals

        figures = {}
        for name, dialers in (("alone", 0), ("with_extra", extra)):
            seen = {t.session_id for t in server.turns()}
            t0 = time.monotonic()
            results, refusals = asyncio.run(phase(dialers))
            time.sleep(0.5)
            new = [t for t in server.turns() if t.session_id not in seen]
            fig = _figures(capacity, results, new, time.monotonic() - t0)
            fig["attempts_refused"] = refusals
            figures[name] = fig
    with_extra = figures["with_extra"]
    return {
        **with_extra,
        "extra": extra,
        "extra_refused": sorted(set(map(tuple, with_extra["attempts_refused"])), key=str),
        "attempts": len(with_extra["attempts_refused"]),
        "admitted_in": sum(r[0] is None for r in with_extra["attempts_refused"]),
        "alone": figures["alone"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threshold-ms", type=float, default=2000.0)
    ap.add_argument("--turns", type=int, default=3, help="turns per session at each level")
    ap.add_argument("--max", type=int, default=16, help="highest level tried")
    ap.add_argument("--extra", type=int, default=2, help="callers beyond capacity")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--out", type=Path, help="keep turn logs and server logs here")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-load-"))
    settings = load_settings()
    clips = evalset.build(build_tts(settings), settings.data_dir / "evalset")
    print(
        f"# castwork voice load — {os.cpu_count()} cores; threshold P95 {args.threshold_ms:.0f} ms;"
        f" {args.turns} turns per session per level",
        flush=True,
    )
    levels, capacity = ramp(work, clips, args.threshold_ms, args.turns, args.max)
    broke = levels[-1] if levels and levels[-1]["sessions"] != capacity else None
    print(f"capacity: {capacity} concurrent sessions with P95 <= {args.threshold_ms:.0f} ms")
    if broke is not None and levels:
        base = levels[0]["stage_p50_ms"]
        grew = {
            s: f"{base.get(s, 0)} -> {ms}" for s, ms in broke["stage_p50_ms"].items() if s in base
        }
        print(f"breaks at {broke['sessions']} sessions; stage medians (1 session -> there): {grew}")
    result: dict[str, Any] = {
        "threshold_ms": args.threshold_ms,
        "levels": levels,
        "capacity": capacity,
    }
    if capacity:
        adm = admission(work, clips, capacity, args.extra, args.turns * 2)
        alone = adm["alone"]
        print(
            f"admission at max_sessions={capacity}: {adm['extra']} extra callers dialing "
            f"made {adm['attempts']} attempts, got {adm['extra_refused']}; admitted P50/P95 "
            f"{adm['p50_ms']}/{adm['p95_ms']} ms with them vs {alone['p50_ms']}/"
            f"{alone['p95_ms']} ms alone; {adm['completed']}/{adm['turns']} completed"
        )
        result["admission"] = adm
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
