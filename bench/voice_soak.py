"""Soak: does the voice server give back what sessions took?

The real `castwork voice` (embedded models) in its own process; for --minutes, waves of
--concurrency callers speak Piper-spoken clips at real-time pace: plain two-turn calls,
callers hanging up mid-turn, callers talking over the answer. Resident memory, open file
descriptors, threads and asyncio tasks are read off the server's /metrics after warm-up
waves in which each kind of caller has called once (baseline), after every wave, and once the last session has ended (after).

    .venv/bin/python bench/voice_soak.py [--minutes 10] [--concurrency 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from voice.engines.factory import build_tts
from voice.monitoring import evalset, loadtest
from workers.settings import load_settings


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--out", type=Path, help="keep the turn log and server log here")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-soak-"))
    settings = load_settings()
    clips = evalset.build(build_tts(settings), settings.data_dir / "evalset")
    print(f"# castwork voice soak — {args.minutes:g} min, {args.concurrency} callers per wave")
    with loadtest.ServerProcess(work) as server:
        report = asyncio.run(
            loadtest.soak(server, clips, args.minutes * 60, concurrency=args.concurrency)
        )
        turns = server.turns()
    outcomes: dict[str, int] = {}
    for t in turns:
        outcomes[t.outcome] = outcomes.get(t.outcome, 0) + 1
    b, p, a = report.baseline, report.peak, report.after
    print(f"{report.sessions} sessions, {report.turns} turns in {report.seconds:.0f} s; "
          f"{report.dropped} hung up mid-turn, {report.barge_ins} talked over the answer, "
          f"{report.refused} refused; server outcomes {outcomes}")  # fmt: skip
    print(f"{'':10}{'baseline':>10}{'peak':>10}{'after':>10}{'drift':>10}")
    drift = report.drift()
    rows = (
        ("rss_mb", "MiB"),
        ("heap_mb", "MiB in use"),
        ("fds", ""),
        ("threads", ""),
        ("tasks", ""),
    )
    for name, unit in rows:
        print(
            f"{name:10}{getattr(b, name):>10.0f}{getattr(p, name):>10.0f}"
            f"{getattr(a, name):>10.0f}{drift[name]:>+10.0f} {unit}"
        )
    print(f"trend over the second half: RSS {report.rss_slope_mb_per_min():+.2f} MiB/min, "
          f"heap in use {report.slope_mb_per_min('heap_mb'):+.2f} MiB/min; "
          f"settled {report.settled_s} s after the last session")  # fmt: skip
    if args.json:
        data = asdict(report)
        data.update(
            drift=drift,
            rss_slope_mb_per_min=report.rss_slope_mb_per_min(),
            heap_slope_mb_per_min=report.slope_mb_per_min("heap_mb"),
        )
        data["outcomes"] = outcomes
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
