"""What it costs to run a voice stage on a model server instead of in the voice process.

Starts `castwork models serve` (the embedded Whisper, SmolLM2 and Piper over OpenAI-compatible
HTTP) and, one after another, `castwork voice` with every stage local, then one stage remote
at a time, then all three remote; one caller streams the Piper-spoken clips at real-time pace
into each. Prints voice-to-voice (server's turn log) and stage medians side by side. Both
servers share this machine's cores, so a remote stage here costs its HTTP hop *and* competes
with the voice process; on separate machines only the hop and the network remain.

    .venv/bin/python bench/remote_cost.py [--turns 8] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voice.engines.factory import build_tts
from voice.monitoring import evalset, loadtest, turnstats
from workers.settings import load_settings

STAGES = ("endpointing", "asr", "llm_first_token", "first_piece", "tts_first_audio")


def arms(url: str) -> list[tuple[str, dict[str, str]]]:
    def remote(model: str) -> str:
        return json.dumps([{"kind": "openai", "url": url, "model": model}])

    asr = {"CASTWORK_ASR__BACKENDS": remote("whisper")}
    llm = {"CASTWORK_LLM__BACKENDS": remote("smollm2-135m")}
    tts = {"CASTWORK_TTS__BACKENDS": remote("piper")}
    return [
        ("all local", {}),
        ("ASR remote", asr),
        ("LLM remote", llm),
        ("TTS remote", tts),
        ("all remote", {**asr, **llm, **tts}),
    ]


def start_models(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = loadtest.free_port()
    log_path = work / "models.log"
    with log_path.open("w") as log:  # the child keeps its own copy of the descriptor
        castwork = Path(sys.executable).with_name("castwork")
        proc = subprocess.Popen(
            [str(castwork), "models", "serve", "--port", str(port)], stdout=log, stderr=log
        )
    loadtest.wait_healthy(port, proc, "castwork models serve", log_path, 120)
    return proc, f"http://127.0.0.1:{port}/v1"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--turns", type=int, default=8, help="turns per arm (one caller)")
    ap.add_argument("--out", type=Path, help="keep turn logs and server logs here")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-remote-"))
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings()
    clips = evalset.build(build_tts(settings), settings.data_dir / "evalset")
    print(
        f"# castwork remote stages — {os.cpu_count()} cores, one caller, {args.turns} turns an arm"
    )
    models, url = start_models(work)
    rows: list[str] = []
    try:
        for name, env in arms(url):
            server = loadtest.ServerProcess(work / name.replace(" ", "-"), env=env)
            with server:
                asyncio.run(loadtest.play_session(server.url, clips, args.turns))
                time.sleep(0.5)
                turns = server.turns()
            group = turnstats.group_of(name, turns)
            v2v = group.stats.get("voice_to_voice")
            cells = [f"{group.stats[s].p50:.0f}" if s in group.stats else "-" for s in STAGES]
            row = (
                f"| {name} | {v2v.p50:.0f} | {v2v.p95:.0f} | {len(turns)} "
                f"{dict(group.outcomes)} | " + " | ".join(cells) + " |"
                if v2v
                else f"| {name} | - | - | {len(turns)} | " + " | ".join(cells) + " |"
            )
            rows.append(row)
            print(row, flush=True)
    finally:
        models.terminate()
        models.wait(30)
    print()
    print("| arm | voice-to-voice P50 ms | P95 ms | turns | " + " | ".join(STAGES) + " |")
    print("|---|---|---|---|" + "---|" * len(STAGES))
    print("\n".join(rows))
    print(f"\nlogs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
