"""Voice capacity of this machine: ramp concurrent sessions until voice-to-voice P95 breaks.

Ramp: the real `castwork voice` (embedded models) in its own process; at each level N
simulated callers speak Piper-spoken clips at real-time pace, each waiting for the answer,
--level-turns turns in all (split between the callers: a P95 needs a few dozen samples, and
over six it is only the slowest). The level's client-side voice-to-voice P95 (last clip
sample sent -> first answer audio received) is compared with --threshold-ms; the capacity is
the last level under it. The ramp stops at the first level over it and prints which stages
grew there.

Admission: the server is restarted with voice.max_sessions = capacity; the admitted callers
talk alone, and again while --extra more keep dialing in once a second, in --rounds
alternating rounds: every extra attempt must get an `error` (session_limit_reached) and a
close, and the admitted callers must keep the latency they had alone (P95 change with a 95%
bootstrap interval: with two callers a phase's P95 swings by a second on its own).

    .venv/bin/python bench/voice_load.py [--threshold-ms 2000] [--level-turns 24] [--max 16]
                                         [--rounds 3] [--json FILE] [--out DIR]
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

from castwork.cli import whole_number
from voice.engines.factory import build_tts
from voice.monitoring import evalset, loadtest, turnstats
from workers.settings import load_settings

LEVELS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32)


async def _level(
    url: str, clips: list[evalset.Clip], n: int, turns: int
) -> list[loadtest.SessionResult]:
    return list(
        await asyncio.gather(
            *(loadtest.play_session(url, clips, turns, offset=i * 5) for i in range(n))
        )
    )


def _v2v(results: list[loadtest.SessionResult]) -> list[float]:
    return [v for r in results for v in r.v2v_ms]


def _stage_medians(turns: list[turnstats.Turn]) -> dict[str, float]:
    group = turnstats.group_of("level", turns)
    return {s: round(group.stats[s].p50) for s in turnstats.STAGES if s in group.stats}


def _figures(
    n: int, results: list[loadtest.SessionResult], turns: list[turnstats.Turn], seconds: float
) -> dict[str, Any]:
    v2v = turnstats.Stats.of(_v2v(results))
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


def _wait_idle(server: loadtest.ServerProcess, timeout: float = 15.0) -> None:
    """Until the server has let go of every session: a caller's close reaches the server a
    moment after the client returns, and a phase started sooner finds its seats still taken."""
    deadline = time.monotonic() + timeout
    while server.resources().sessions and time.monotonic() < deadline:
        time.sleep(0.1)


def per_caller(level_turns: int, callers: int) -> int:
    """Turns each caller speaks so that ``callers`` of them speak at least ``level_turns``."""
    return -(-level_turns // callers)


def ramp(
    work: Path, clips: list[evalset.Clip], threshold: float, level_turns: int, top: int
) -> tuple[list[dict[str, Any]], int]:
    levels: list[dict[str, Any]] = []
    capacity = 0
    with loadtest.ServerProcess(work / "ramp") as server:
        asyncio.run(_level(server.url, clips, 1, 1))  # warm-up: first decodes are slow
        for n in (level for level in LEVELS if level <= top):
            turns = per_caller(level_turns, n)
            _wait_idle(server)
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
    work: Path, clips: list[evalset.Clip], capacity: int, extra: int, turns: int, rounds: int
) -> dict[str, Any]:
    """At max_sessions = capacity: the admitted callers alone, and the same callers while
    ``extra`` more keep dialing in (one attempt a second each), in ``rounds`` alternating
    rounds on one server (alone first in even rounds, last in odd ones, so drift in the
    machine's speed falls on both sides).

    Admitted callers stay on the line until all of them are done: a seat freed early would let
    a dialer in, and the comparison would be of different loads.
    """
    env = {
        "CASTWORK_VOICE__MAX_SESSIONS": str(capacity),
        "CASTWORK_VOICE__MAX_SESSIONS_PER_KEY": str(capacity),
        # Greedy decoding: both sides get the same answers, so they do the same work. At the
        # default temperature one answer runs 5 words and the next 40, and which phase drew the
        # long ones decided the comparison.
        "CASTWORK_LLM__TEMPERATURE": "0",
    }
    with loadtest.ServerProcess(work / "admission", env) as server:
        asyncio.run(_level(server.url, clips, 1, 1))

        async def phase(dialers: int) -> tuple[list[loadtest.SessionResult], list[Any]]:
            finished, everyone_done = 0, asyncio.Event()

            async def hold_seat() -> None:
                nonlocal finished
                finished += 1
                if finished == capacity:
                    everyone_done.set()
                await everyone_done.wait()

            admitted = [
                asyncio.create_task(
                    loadtest.play_session(server.url, clips, turns, offset=i * 5, linger=hold_seat)
                )
                for i in range(capacity)
            ]
            await asyncio.sleep(0.5)  # the admitted ones hold their places first
            refusals: list[Any] = []

            async def dial() -> None:
                while not everyone_done.is_set():
                    r = await loadtest.play_session(server.url, clips, 0)
                    refusals.append((r.refused, r.close_code))
                    await asyncio.sleep(1.0)

            dialing = [asyncio.create_task(dial()) for _ in range(dialers)]
            results = list(await asyncio.gather(*admitted))
            await asyncio.gather(*dialing)
            return results, refusals

        sides: dict[str, dict[str, list[Any]]] = {
            name: {"results": [], "turns": [], "refusals": []} for name in ("alone", "with_extra")
        }
        seconds = dict.fromkeys(sides, 0.0)
        for r in range(rounds):
            order = [("alone", 0), ("with_extra", extra)]
            for name, dialers in order if r % 2 == 0 else order[::-1]:
                _wait_idle(server)
                seen = {t.session_id for t in server.turns()}
                t0 = time.monotonic()
                results, refusals = asyncio.run(phase(dialers))
                time.sleep(0.5)
                seconds[name] += time.monotonic() - t0
                side = sides[name]
                side["results"] += results
                side["turns"] += [t for t in server.turns() if t.session_id not in seen]
                side["refusals"] += refusals
                v2v = turnstats.Stats.of(_v2v(results))
                shown = "no answers" if v2v is None else f"P50/P95 {v2v.p50:.0f}/{v2v.p95:.0f} ms"
                print(
                    f"  round {r + 1}/{rounds} {name}: {shown}, {len(refusals)} attempts",
                    file=sys.stderr,
                    flush=True,
                )
        _wait_idle(server)
        cost = asyncio.run(_refusal_cost(server, capacity, extra))
    figures = {
        name: _figures(capacity, side["results"], side["turns"], seconds[name])
        for name, side in sides.items()
    }
    lo, hi = turnstats.percentile_change_ci(
        _v2v(sides["alone"]["results"]), _v2v(sides["with_extra"]["results"]), 95
    )
    refusals = sides["with_extra"]["refusals"]
    with_extra = figures["with_extra"]
    change = with_extra["p95_ms"] - figures["alone"]["p95_ms"]
    return {
        **with_extra,
        "rounds": rounds,
        "extra": extra,
        "extra_refused": sorted(set(map(tuple, refusals)), key=str),
        "attempts": len(refusals),
        "admitted_in": sum(x[0] is None for x in refusals),
        "p95_change_ms": change,
        "p95_change_ci_ms": [round(lo), round(hi)],
        "p95_change_pct": round(100 * change / figures["alone"]["p95_ms"], 1),
        "alone": figures["alone"],
        "refusal_cost": cost,
    }


async def _refusal_cost(
    server: loadtest.ServerProcess, capacity: int, dialers: int, seconds: float = 10.0
) -> dict[str, float]:
    """Server CPU per refused attempt: the seats held by silent callers for ``seconds`` with
    nobody dialing, then as long again with ``dialers`` dialing back to back."""
    done = asyncio.Event()

    async def wait_done() -> None:
        await done.wait()

    holders = [
        asyncio.create_task(loadtest.play_session(server.url, [], 0, linger=wait_done))
        for _ in range(capacity)
    ]
    await asyncio.sleep(1.0)
    attempts = 0
    dialing = asyncio.Event()

    async def dial() -> None:
        nonlocal attempts
        while dialing.is_set():
            r = await loadtest.play_session(server.url, [], 0)
            attempts += r.refused is not None

    cpu = []
    for with_dialers in (False, True):
        before = await asyncio.to_thread(server.resources)
        if with_dialers:
            dialing.set()
            tasks = [asyncio.create_task(dial()) for _ in range(dialers)]
        await asyncio.sleep(seconds)
        dialing.clear()
        if with_dialers:
            await asyncio.gather(*tasks)
        cpu.append((await asyncio.to_thread(server.resources)).cpu_s - before.cpu_s)
    done.set()
    await asyncio.gather(*holders)
    per_ms = 1000 * (cpu[1] - cpu[0]) / max(attempts, 1)
    return {
        "attempts": attempts,
        "per_second": round(attempts / seconds, 1),
        "cpu_ms_per_refusal": round(per_ms, 2),
        # At the bench's pace (each extra caller once a second): the share of one core.
        "core_share_at_pace_pct": round(per_ms * dialers / 10, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threshold-ms", type=float, default=2000.0)
    ap.add_argument(
        "--level-turns",
        type=whole_number(1),
        default=24,
        help="turns at each level, split between callers",
    )
    ap.add_argument("--max", type=whole_number(1), default=16, help="highest level tried")
    ap.add_argument("--extra", type=whole_number(1), default=2, help="callers beyond capacity")
    ap.add_argument(
        "--rounds",
        type=whole_number(1),
        default=3,
        help="admission rounds (alone and with the extra callers)",
    )
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--out", type=Path, help="keep turn logs and server logs here")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-load-"))
    settings = load_settings()
    clips = evalset.build(build_tts(settings), settings.data_dir / "evalset")
    print(
        f"# castwork voice load — {os.cpu_count()} cores; threshold P95 {args.threshold_ms:.0f} ms;"
        f" {args.level_turns} turns per level",
        flush=True,
    )
    levels, capacity = ramp(work, clips, args.threshold_ms, args.level_turns, args.max)
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
        adm = admission(
            work, clips, capacity, args.extra, per_caller(args.level_turns, capacity), args.rounds
        )
        alone = adm["alone"]
        print(
            f"admission at max_sessions={capacity}: {adm['extra']} extra callers dialing "
            f"made {adm['attempts']} attempts, got {adm['extra_refused']}; admitted P50/P95 "
            f"{adm['p50_ms']}/{adm['p95_ms']} ms with them vs {alone['p50_ms']}/"
            f"{alone['p95_ms']} ms alone over {adm['rounds']} alternating rounds: P95 "
            f"{adm['p95_change_ms']:+d} ms ({adm['p95_change_pct']:+.1f}%, 95% interval "
            f"{adm['p95_change_ci_ms'][0]:+d} to {adm['p95_change_ci_ms'][1]:+d} ms); "
            f"{adm['completed']}/{adm['turns']} completed"
        )
        rc = adm["refusal_cost"]
        print(
            f"a refusal costs the server {rc['cpu_ms_per_refusal']} ms of CPU ({rc['attempts']}"
            f" back-to-back refusals, {rc['per_second']}/s): {rc['core_share_at_pace_pct']}% "
            f"of a core at {adm['extra']} attempts a second"
        )
        result["admission"] = adm
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"logs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
