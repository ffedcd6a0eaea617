"""Backchannels and barge-ins: does speech over the agent's answer cancel it when it should?

The real server (`castwork voice`: Silero VAD, Whisper, Piper, semantic_vad) with a scripted
OpenAI-compatible model that gives a long answer (~20 s of speech), so every trial has an
answer to talk over. Each trial: a caller asks a question; 1 s into the answer it says one
clip (Piper's voice) over it, then listens. 10 backchannels ("Uh-huh.", "Okay.") must leave
the answer running; 10 real interruptions ("Stop.", "Wait, that's wrong.") must cancel it.
Clips alternate dev / held-out (the backchannel word list was written before either was
played; figures are printed for each half); a third set, "fresh" (10 of each), was written
after the filler prompt was chosen, and a fourth, "fresh-2", by someone who had not seen the
word list, after it grew (nothing was tuned on either before it was first played).

Side by side in one run: ``vad.barge_in_min_ms`` 1000 (the default: speech interrupts once
1000 ms of it is heard, or as soon as its words are not a backchannel), the same with
``vad.backchannel_prompt`` (the decode of that speech reads fillers first), and 0 (any
speech interrupts at once, as before). Latency: from the end of the interjection's speech to the
``response.done`` (cancelled) the caller receives; and the server's cancel-to-done time.

    .venv/bin/python bench/barge_in.py [--arms default prompt any] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voice import audio as pcm
from voice.clients.realtime import RealtimeClient
from voice.engines.factory import build_tts
from voice.monitoring import loadtest
from voice.testing.fake_openai import Behaviour, FakeOpenAIServer
from workers.settings import load_settings

RATE = 16_000
QUESTION = "When are you open?"
ANSWER = (
    "We open at nine in the morning on weekdays and at ten on Saturdays. On Sundays we are "
    "closed, except in December, when we open from eleven to four. Public holidays follow the "
    "Sunday hours. The café inside the shop opens half an hour earlier and closes at the same "
    "time as the shop. If you need anything outside those hours, you can order online and "
    "pick it up from the lockers by the entrance, which are open all day and night."
)
BACKCHANNELS = (
    "Uh-huh.",
    "Okay.",
    "Mm-hmm.",
    "Yeah.",
    "Right.",
    "I see.",
    "Sure.",
    "Okay, yeah.",
    "Got it.",
    "Yes.",
)
BARGE_INS = (
    "Stop.",
    "Wait, that's wrong.",
    "No.",
    "Hold on a second.",
    "Actually, I meant the shop in town.",
    "Sorry, can you repeat that?",
    "Cancel that, please.",
    "Hang on.",
    "Excuse me, I have another question.",
    "No, I asked about Sunday.",
)
# Written after vad.backchannel_prompt was chosen (on the 20 above and 10 more of each), and
# first played by this bench: a set nothing was tuned on.
FRESH_BACKCHANNELS = (
    "Uh-huh, yeah.",
    "Mm, okay.",
    "Oh, I see.",
    "Yeah, sure.",
    "Right, okay.",
    "Hmm, okay.",
    "Ah, right.",
    "Cool.",
    "Oh wow.",
    "Makes sense.",
)
FRESH_BARGE_INS = (
    "Hold on, wait.",
    "That's not what I asked.",
    "Can I stop you there?",
    "No, listen.",
    "Just a moment.",
    "Please stop.",
    "What do you mean?",
    "Sorry, what was that?",
    "Wait a minute.",
    "Skip that part.",
)
# Written by a helper that had not seen the backchannel word list, after the list gained
# acknowledgements ("perfect", "makes sense"...) because "Makes sense." had cancelled the
# answer in the set above: a second set nothing was tuned on.
FRESH2_BACKCHANNELS = (
    "Mhm.",
    "Yep.",
    "Gotcha.",
    "Alright.",
    "Ah, okay.",
    "Oh, okay.",
    "Yeah, yeah.",
    "Uh-huh, right.",
    "Okay, cool.",
    "Perfect.",
)
FRESH2_BARGE_INS = (
    "Sorry, I didn't catch that.",
    "Wait, are you open now?",
    "Actually, never mind.",
    "No no, just Saturdays.",
    "Hold up.",
    "Can you slow down?",
    "Just tell me about tomorrow.",
    "Sorry to interrupt, quick question.",
    "Wait, what about the café?",
    "Excuse me, sorry.",
)
SPLITS = ("dev", "held-out", "fresh", "fresh-2")
# name: (label, vad.barge_in_min_ms, vad.backchannel_prompt)
ARMS = {
    "default": ("barge_in_min_ms 1000 (default)", "1000", "false"),
    "prompt": ("barge_in_min_ms 1000, backchannel_prompt", "1000", "true"),
    "any": ("barge_in_min_ms 0 (any speech)", "0", "false"),
}


@dataclass(frozen=True)
class Trial:
    clip: str
    kind: str  # backchannel or barge-in
    split: str
    cancelled: bool
    after_end_ms: float | None  # interjection's speech end -> response.done (cancelled)


def _speech(tts: Any, text: str) -> pcm.Float32Array:
    chunks = list(tts.synthesize(text))
    return pcm.resample(pcm.concat(chunks), tts.sample_rate, RATE)


def _speech_span(audio: pcm.Float32Array) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if not len(loud):
        return 0.0, len(audio) / RATE
    return loud[0] / RATE, (loud[-1] + 1) / RATE


async def _trial(
    url: str, question: pcm.Float32Array, clip: pcm.Float32Array
) -> tuple[bool, float | None]:
    client = await RealtimeClient.open(url)
    try:
        await client.stream(question, RATE)
        async with client.silence():
            await client.wait_for("response.output_audio.delta", timeout=30)
            await asyncio.sleep(1.0)
        start = time.monotonic()
        await client.stream(clip, RATE)
        end_at = start + _speech_span(clip)[1]
        async with client.silence():
            try:
                done = await client.wait_for("response.done", timeout=4.0)
            except TimeoutError:
                return False, None
        cancelled = done["response"]["status"] == "cancelled"
        at = next(r.at for r in client.events if r.event is done)
        return cancelled, (at - end_at) * 1000 if cancelled else None
    finally:
        await client.close()


def run_arm(
    work: Path,
    env: dict[str, str],
    question: pcm.Float32Array,
    clips: list[tuple[str, str, str, pcm.Float32Array]],
) -> tuple[list[Trial], list[float]]:
    trials = []
    with loadtest.ServerProcess(work, env=env) as srv:
        for text, kind, split, audio in clips:
            cancelled, after = asyncio.run(_trial(srv.url, question, audio))
            trials.append(Trial(text, kind, split, cancelled, after))
            print(
                f"  {kind:11s} {split:8s} {text!r:40s} cancelled={cancelled}"
                + (f" {after:.0f} ms after its end" if after is not None else ""),
                flush=True,
            )
        time.sleep(0.5)
        server_side = [
            float(t.extra["cancel_to_done_ms"])
            for t in srv.turns()
            if "cancel_to_done_ms" in t.extra
        ]
    return trials, server_side


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if values else "-"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, help="keep turn logs and server logs here")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-barge-in-"))
    settings = load_settings()
    tts = build_tts(settings)
    question = np.concatenate([_speech(tts, QUESTION), np.zeros(RATE // 10, np.float32)])
    clips = [
        (text, kind, "dev" if i % 2 == 0 else "held-out", _speech(tts, text))
        for kind, texts in (("backchannel", BACKCHANNELS), ("barge-in", BARGE_INS))
        for i, text in enumerate(texts)
    ]
    for split, sets in (
        ("fresh", (FRESH_BACKCHANNELS, FRESH_BARGE_INS)),
        ("fresh-2", (FRESH2_BACKCHANNELS, FRESH2_BARGE_INS)),
    ):
        clips += [
            (text, kind, split, _speech(tts, text))
            for kind, texts in zip(("backchannel", "barge-in"), sets, strict=True)
            for text in texts
        ]
    print(
        f"# castwork barge-in — {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"{len(clips)} interjections per arm"
    )
    lines = [
        "| arm | split | backchannels that cancelled the answer | barge-ins that cancelled it | "
        "barge-in: speech end to response.done P50 / max ms | server cancel-to-done P50 ms |",
        "|---|---|---|---|---|---|",
    ]
    with FakeOpenAIServer(Behaviour(reply=ANSWER)) as fake:
        backends = [{"kind": "openai", "url": fake.url, "model": "scripted"}]
        for label, min_ms, prompt in (ARMS[name] for name in args.arms):
            print(f"# {label}", flush=True)
            env = {
                "CASTWORK_LLM__BACKENDS": json.dumps(backends),
                "CASTWORK_VAD__BARGE_IN_MIN_MS": min_ms,
                "CASTWORK_VAD__BACKCHANNEL_PROMPT": prompt,
            }
            trials, server_side = run_arm(work / f"min-{min_ms}-{prompt}", env, question, clips)
            for split in SPLITS:
                mine = [t for t in trials if t.split == split]
                back = [t for t in mine if t.kind == "backchannel"]
                barge = [t for t in mine if t.kind == "barge-in"]
                after = [t.after_end_ms for t in barge if t.after_end_ms is not None]
                lines.append(
                    f"| {label} | {split} | {sum(t.cancelled for t in back)}/{len(back)} | "
                    f"{sum(t.cancelled for t in barge)}/{len(barge)} | "
                    f"{_pct(after, 50)} / {max(after) if after else float('nan'):.0f} | "
                    f"{statistics.median(server_side) if server_side else float('nan'):.0f} |"
                )
    print(f"\nload average at end {os.getloadavg()[0]:.1f}; logs in {work}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
