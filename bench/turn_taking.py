"""Turn-taking: how well each signal tells a finished turn from a mid-sentence pause, and how
often each endpointing mode cuts in.

The set: 20 sentences with a clause boundary, each spoken whole by Piper, and the same audio
with a pause opened at the boundary: 700 ms for every sentence (the target's case) and, for
15 of them, also 300, 500 or 900 ms (so each half has every length); the first part keeps its
mid-sentence prosody (the cut point is the end of the boundary word, from Whisper's word
timestamps on the whole sentence). Plus 8 short complete answers ("Yes.", "Tuesday at ten."),
played after the agent asked a question. Even-numbered sentences are the dev half (the
eagerness settings in voice/core/turntaking.py were chosen on it), odd ones held out;
figures are printed for each.

1. ``signals``: at 200 ms into each pause, and 200 ms after each complete utterance, what
   each signal says: Smart Turn v3.2's probability at several thresholds, the transcript
   so far (Whisper tiny.en: does it end unfinished, on "and"/"the"/"to"... or "..."), the
   text model's reading of it (SmolLM2: P(the message ends here)), the signals combined,
   and semantic_vad's whole rule per eagerness, without and with the text model; and the
   text model alone on 20 fresh requests, cut and whole (also after the agent's greeting, with
   what a reading costs then, cold and read ahead). Incomplete judged incomplete =
   a cut-in avoided; complete judged complete = an endpoint that need not wait.
2. ``server`` (``--server``): the real server (`castwork voice`, embedded models) hears the
   set with ``server_vad`` at 200 and 500 ms of silence and ``semantic_vad`` at each
   eagerness (auto and low also with the text model): the cut-in rate (one utterance
   committed as two turns or more), on all pauses and on the 700 ms ones, and the endpoint
   delay (last speech frame to endpoint) on the complete utterances.

    .venv/bin/python bench/turn_taking.py [--server]
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice import audio as pcm
from voice.clients.realtime import RealtimeClient
from voice.core.turntaking import PATIENCE, judge, reads_unfinished, sure_enough
from voice.engines.factory import build_asr, build_text_turn, build_tts
from voice.engines.registry import resolve_turn
from voice.engines.smart_turn import SmartTurn
from voice.engines.text_turn import TextTurn
from voice.monitoring import loadtest
from workers.settings import load_settings

RATE = 16_000
TEXT_MODEL = "smollm2-135m"  # the text end-of-turn model measured (vad.text_turn_model)
SENTENCES = (
    ("I would like to book a table", "for two at seven tonight."),
    ("Can you check whether my package", "has left the warehouse yet?"),
    ("My daughter has a dentist appointment on Friday", "and I need to move it."),
    ("What I really want to know is", "how long the battery lasts."),
    ("If it rains tomorrow morning", "should I still bring the dog?"),
    ("I was wondering if you could", "tell me the opening hours."),
    ("The thing is that I ordered the blue one", "but got the red one."),
    ("Could you remind me", "to water the plants on Sunday?"),
    ("We are planning a trip to the coast", "sometime in late August."),
    ("I think the problem is", "that the printer is out of ink."),
    ("Please add eggs and milk and", "a loaf of bread to my list."),
    ("When you get a chance", "send me the invoice for March."),
    ("How much would it cost to ship", "a small box to Canada?"),
    ("I need to cancel my subscription because", "I am moving abroad next month."),
    ("Tell me a story about", "a dragon who likes to bake."),
    ("Before we hang up", "can you confirm the address?"),
    ("The meeting was moved from Tuesday", "to Thursday afternoon."),
    ("I am not sure whether", "I left the oven on."),
    ("What is the best way to get", "from the airport to downtown?"),
    ("Last week I bought a jacket from you and", "the zipper already broke."),
)
SHORT = (
    "Yes.",
    "No, thanks.",
    "Tuesday at ten.",
    "That's right.",
    "Sure, go ahead.",
    "Two people.",
    "Okay.",
    "The blue one.",
)
# Text only, written after vad.text_turn_model's thresholds were chosen (tuned on by
# nothing): each request cut at a clause boundary, and whole. The text model should read the
# first part as unfinished and the whole as finished.
FRESH_TEXT = (
    ("Can you tell me", "the way to the station?"),
    ("I'd like to change", "my delivery address."),
    ("What's the weather going to be like", "this weekend?"),
    ("Is there a pharmacy open", "near me right now?"),
    ("Please book me a taxi", "to the airport at six."),
    ("How long does it take", "to get a refund?"),
    ("I think I left my wallet", "in the taxi last night."),
    ("Could you check if", "my order has shipped?"),
    ("My internet has been down", "since this morning."),
    ("Do you have any tables free", "for four people tonight?"),
    ("Remind me to call my mother", "on Saturday afternoon."),
    ("I want to return the shoes", "because they are too small."),
    ("What are your opening hours", "on public holidays?"),
    ("Can I pay with", "a credit card?"),
    ("Set an alarm for", "seven tomorrow morning."),
    ("How much does a ticket", "to Busan cost?"),
    ("I'm calling about the bill", "I received yesterday."),
    ("Where can I park", "near the stadium?"),
    ("Play some music that", "helps me relax."),
    ("Tell me how to reset", "my password."),
)
PAUSES_MS = (300, 500, 700, 900)
THRESHOLDS = (0.5, 0.7, 0.9)


@dataclass
class Utterance:
    text: str
    audio: pcm.Float32Array  # 16 kHz; for a paused one, with the pause opened
    split: str  # dev or held-out
    cut_at: int | None = None  # sample where the pause begins (paused ones)
    pause_ms: int = 0

    @property
    def complete(self) -> bool:
        return self.cut_at is None


def _speech(tts: object, text: str) -> pcm.Float32Array:
    chunks = list(tts.synthesize(text))  # type: ignore[attr-defined]
    return pcm.resample(pcm.concat(chunks), tts.sample_rate, RATE)  # type: ignore[attr-defined]


def build_set(cache: Path) -> list[Utterance]:
    """Synthesised once into ``cache`` (a JSON of cut points beside the WAVs)."""
    settings = load_settings()
    index = cache / "set.json"
    if index.is_file():
        meta = json.loads(index.read_text())
        return [
            Utterance(
                m["text"], pcm.read_wav(cache / m["wav"])[0], m["split"], m["cut_at"], m["pause_ms"]
            )
            for m in meta
        ]
    cache.mkdir(parents=True, exist_ok=True)
    tts, asr = build_tts(settings), build_asr(settings)
    out: list[Utterance] = []
    for i, (first, second) in enumerate(SENTENCES):
        split = "dev" if i % 2 == 0 else "held-out"
        whole = _speech(tts, f"{first} {second}")
        out.append(Utterance(f"{first} {second}", whole, split))
        words = asr.transcribe(whole, word_timestamps=True).words
        n = len(first.split())
        if len(words) <= n:
            print(f"skipped (Whisper heard {len(words)} words): {first} / {second}")
            continue
        cut = _quietest(whole, words[n - 1].end - 0.08, words[n].start + 0.08)
        # Each split gets every pause length, and every sentence the 700 ms one (the target's).
        for pause_ms in sorted({PAUSES_MS[(i // 2) % len(PAUSES_MS)], 700}):
            gap = np.zeros(RATE * pause_ms // 1000, np.float32)
            paused = np.concatenate([whole[:cut], gap, whole[cut:]])
            out.append(Utterance(f"{first} | {second}", paused, split, cut, pause_ms))
    for i, text in enumerate(SHORT):
        out.append(Utterance(text, _speech(tts, text), "dev" if i % 2 == 0 else "held-out"))
    meta = []
    for k, u in enumerate(out):
        name = f"{k:02d}.wav"
        (cache / name).write_bytes(pcm.wav_bytes(u.audio, RATE))
        meta.append(
            {
                "wav": name,
                "text": u.text,
                "split": u.split,
                "cut_at": u.cut_at,
                "pause_ms": u.pause_ms,
            }
        )
    index.write_text(json.dumps(meta, indent=1))
    return out


def _quietest(audio: pcm.Float32Array, start_s: float, end_s: float) -> int:
    """The quietest 10 ms in a span around a word boundary: Whisper's word times are only
    roughly right, and a cut inside a word would leave half of it on each side."""
    hop = RATE // 100
    lo, hi = max(0, int(start_s * RATE)), min(len(audio) - hop, int(end_s * RATE))
    if hi <= lo:
        return max(0, min(len(audio), int((start_s + end_s) / 2 * RATE)))
    energy = [float(np.mean(audio[i : i + hop] ** 2)) for i in range(lo, hi, hop)]
    return lo + hop * int(np.argmin(energy)) + hop // 2


def judged_audio(u: Utterance) -> pcm.Float32Array:
    """What a judge hears 200 ms into the pause (or after the complete utterance's speech)."""
    end = u.cut_at if u.cut_at is not None else _speech_end(u.audio)
    return np.concatenate([u.audio[:end], np.zeros(RATE // 5, np.float32)])


def _speech_end(audio: pcm.Float32Array) -> int:
    loud = np.flatnonzero(np.abs(audio) > 0.005)  # Piper's silence is digital: nearly zero
    return int(loud[-1]) + 1 if len(loud) else len(audio)


@dataclass(frozen=True)
class Judged:
    utterance: Utterance
    p: float  # Smart Turn's probability of a finished turn
    unfinished: bool  # the transcript so far reads unfinished
    ms: float  # the model's inference time
    text: str = ""  # the transcript so far
    p_text: float | None = None  # the text model's P(the message ends here)
    text_ms: float = 0.0  # its inference time


def _row(split: str, name: str, part: list[Judged], says_complete: Callable[[Judged], bool]) -> str:
    paused = [x for x in part if not x.utterance.complete]
    whole = [x for x in part if x.utterance.complete]
    avoided = sum(1 for x in paused if not says_complete(x))
    right = sum(1 for x in whole if says_complete(x))
    return f"| {split} | {name} | {avoided}/{len(paused)} | {right}/{len(whole)} |"


def _rule_row(split: str, eagerness: str, part: list[Judged], *, with_text: bool) -> str:
    """The whole semantic_vad rule: a paused sentence is not cut when the wait it chose is
    longer than its pause; a complete one counts when the turn ends at once."""

    def wait(x: Judged) -> int:
        if sure_enough(x.p, eagerness) and not with_text:
            return 0  # the server ends the turn before the transcript is in
        after_question = x.utterance.text in SHORT
        return judge(
            x.p,
            x.text,
            eagerness,
            after_question=after_question,
            text_probability=x.p_text if with_text else None,
        ).wait_ms

    paused = [x for x in part if not x.utterance.complete]
    whole = [x for x in part if x.utterance.complete]
    avoided = sum(1 for x in paused if wait(x) > x.utterance.pause_ms)
    right = sum(1 for x in whole if wait(x) == 0)
    name = f"semantic_vad rule, {eagerness}" + (" with the text model" if with_text else "")
    return f"| {split} | {name} | {avoided}/{len(paused)} | {right}/{len(whole)} |"


def _above(threshold: float, *, and_transcript: bool = False) -> Callable[[Judged], bool]:
    return lambda x: x.p >= threshold and not (and_transcript and x.unfinished)


def signals(utterances: list[Utterance]) -> list[str]:
    settings = load_settings()
    turn = SmartTurn(resolve_turn("smart-turn-v3.2").path)
    asr = build_asr(settings)
    reader = build_text_turn(
        settings.model_copy(
            update={"vad": settings.vad.model_copy(update={"text_turn_model": TEXT_MODEL})}
        )
    )
    rows = []
    per: list[Judged] = []
    for u in utterances:
        audio = judged_audio(u)
        t0 = time.perf_counter()
        p = turn.probability(audio)
        ms = (time.perf_counter() - t0) * 1000
        text = asr.transcribe(audio).text
        p_text, text_ms = None, 0.0
        if reader is not None and text:
            before = QUESTION if u.text in SHORT else None
            t0 = time.perf_counter()
            p_text = reader.probability(text, before)
            text_ms = (time.perf_counter() - t0) * 1000
        per.append(Judged(u, p, reads_unfinished(text), ms, text, p_text, text_ms))
        kind = "complete" if u.complete else f"paused {u.pause_ms}"
        print(
            f"{u.split:8s} {kind:11s} p={p:.2f} text-unfinished={reads_unfinished(text)!s:5s} "
            f"p_text={'-' if p_text is None else f'{p_text:.3f}'} {text!r}"
        )
    rows.append(
        "| split | signal | paused judged incomplete (cut-ins avoided) | complete judged complete |"
    )
    rows.append("|---|---|---|---|")
    for split in ("dev", "held-out"):
        part = [x for x in per if x.utterance.split == split]
        for thr in THRESHOLDS:
            rows.append(_row(split, f"Smart Turn >= {thr}", part, _above(thr)))
        rows.append(_row(split, "transcript not unfinished", part, lambda x: not x.unfinished))
        if reader is not None:
            for thr in (0.05, 0.1, 0.2):
                rows.append(
                    _row(
                        split,
                        f"text model >= {thr}",
                        part,
                        lambda x, t=thr: x.p_text is None or x.p_text >= t,  # type: ignore[misc]
                    )
                )
        for thr in THRESHOLDS:
            rows.append(
                _row(
                    split,
                    f"Smart Turn >= {thr} and transcript",
                    part,
                    _above(thr, and_transcript=True),
                )
            )
        for eagerness in ("high", "medium", "low"):
            rows.append(_rule_row(split, eagerness, part, with_text=False))
            if reader is not None:
                rows.append(_rule_row(split, eagerness, part, with_text=True))
    times = [x.ms for x in per]
    rows.append(
        f"\nSmart Turn inference: median {statistics.median(times):.0f} ms, max {max(times):.0f} ms "
        f"(1 thread, load average {os.getloadavg()[0]:.1f})"
    )
    if reader is not None:
        rows.append(
            "\n| fresh text (20 requests, text model only) | threshold | first parts judged "
            "unfinished | whole requests judged finished |\n|---|---|---|---|"
        )
        for before, label in ((None, ""), (GREETING, ", after the agent's greeting")):
            firsts = [reader.probability(a, before) for a, _ in FRESH_TEXT]
            wholes = [reader.probability(f"{a} {b}", before) for a, b in FRESH_TEXT]
            for eagerness in ("high", "medium", "low"):
                thr = PATIENCE[eagerness].text_threshold
                rows.append(
                    f"| {eagerness}{label} | {thr} | {sum(p < thr for p in firsts)}/{len(firsts)}"
                    f" | {sum(p >= thr for p in wholes)}/{len(wholes)} |"
                )
        rows.append(_reading_times(reader))
    text_times = [x.text_ms for x in per if x.p_text is not None]
    if text_times:
        rows.append(
            f"text model ({TEXT_MODEL}): median {statistics.median(text_times):.0f} "
            f"ms, max {max(text_times):.0f} ms"
        )
    return rows


def _reading_times(reader: TextTurn) -> str:
    """What a pause's reading costs when the agent has spoken: read cold (the context holds
    another conversation) and read ahead (semantic_vad's PrimeText at speech start)."""

    def timed(text: str, before: str | None) -> float:
        t0 = time.perf_counter()
        reader.probability(text, before)
        return (time.perf_counter() - t0) * 1000

    alone, cold, ahead = [], [], []
    for first, _ in FRESH_TEXT:
        reader.prime(QUESTION)  # another caller's conversation
        alone.append(timed(first, None))
        reader.prime(QUESTION)
        cold.append(timed(first, GREETING))
        reader.prime(QUESTION)
        reader.prime(GREETING)
        ahead.append(timed(first, GREETING))
    return (
        f"text model reading of the fresh first parts, median / max ms: no agent words "
        f"{statistics.median(alone):.0f} / {max(alone):.0f}; after the greeting "
        f"({len(GREETING.split())} words) read cold {statistics.median(cold):.0f} / "
        f"{max(cold):.0f}, read ahead {statistics.median(ahead):.0f} / {max(ahead):.0f}"
    )


QUESTION = "How many people, and which day suits you?"  # what the agent asked before a short answer
GREETING = "Hi, thanks for calling. How can I help you today?"  # the agent before a request
# (mode, silence_duration_ms or eagerness[, "text": with vad.text_turn_model = TEXT_MODEL])
# played to the server, in this order.
MODES: tuple[tuple[str, ...], ...] = (
    ("server_vad", "200"),
    ("server_vad", "500"),
    ("semantic_vad", "high"),
    ("semantic_vad", "auto"),
    ("semantic_vad", "auto", "text"),
    ("semantic_vad", "low"),
    ("semantic_vad", "low", "text"),
)


def _turn_detection(mode: str, knob: str) -> dict[str, object]:
    if mode == "server_vad":
        return {"type": mode, "silence_duration_ms": int(knob), "create_response": False}
    return {"type": mode, "eagerness": knob, "create_response": False}


def _trailing_ms(mode: str, knob: str) -> int:
    """Silence after each utterance: past the longest wait the mode can take."""
    limit = int(knob) if mode == "server_vad" else PATIENCE[knob].max_wait_ms
    return limit + 1000


async def _play(url: str, u: Utterance, mode: str, knob: str) -> tuple[str, int]:
    """Play one utterance (a short answer after the agent's question), then silence; the
    session id and the number of turns the server committed."""
    client = await RealtimeClient.open(url)
    try:
        session_id = client.events[0].event["session"]["id"]
        td = _turn_detection(mode, knob)
        await client.send(
            {
                "type": "session.update",
                "session": {"type": "realtime", "audio": {"input": {"turn_detection": td}}},
            }
        )
        if u.complete and u.text in SHORT:
            await client.add_agent_message(QUESTION)
        await client.stream(u.audio, RATE)
        # An open microphone until the last turn has ended (or the mode's longest wait passed).
        deadline = time.monotonic() + _trailing_ms(mode, knob) / 1000
        async with client.silence():
            while time.monotonic() < deadline:
                vad = [t for t in client.types() if t.startswith("input_audio_buffer.speech_")]
                if vad and vad[-1] == "input_audio_buffer.speech_stopped":
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the commit follows speech_stopped
        return session_id, client.types().count("input_audio_buffer.committed")
    finally:
        await client.close()


def _pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.0f}" if values else "-"


def server(
    utterances: list[Utterance], work: Path, modes: tuple[tuple[str, ...], ...] = MODES
) -> list[str]:
    """Each mode on one server run: cut-ins on the paused sentences (all pauses, and the
    700 ms ones) and the endpoint delay on the complete utterances, per split."""
    rows = [
        "| split | turn detection | cut-ins (paused sentences answered as 2+ turns) | of them "
        "700 ms pauses | complete utterances: endpoint delay P50 / P95 ms | complete ones "
        "split or unanswered |",
        "|---|---|---|---|---|---|",
    ]
    for mode, knob, *flags in modes:
        env = {"CASTWORK_VAD__TEXT_TURN_MODEL": TEXT_MODEL if "text" in flags else ""}
        with loadtest.ServerProcess(work / "-".join([mode, knob, *flags]), env=env) as srv:
            played = [(u, *asyncio.run(_play(srv.url, u, mode, knob))) for u in utterances]
            time.sleep(0.5)
            first: dict[str, float] = {}
            for t in srv.turns():
                if "endpointing" in t.durations_ms and t.session_id not in first:
                    first[t.session_id] = t.durations_ms["endpointing"]
        label = f"{mode} {knob}" + (" ms" if mode == "server_vad" else "")
        if mode == "semantic_vad":
            label += ", with the text model" if "text" in flags else ""
        for split in ("dev", "held-out"):
            mine = [(u, sid, n) for u, sid, n in played if u.split == split]
            paused = [(u, n) for u, _, n in mine if not u.complete]
            cut = sum(1 for _, n in paused if n > 1)
            at700 = [n for u, n in paused if u.pause_ms == 700]
            whole = [(sid, n) for u, sid, n in mine if u.complete]
            delays = [first[sid] for sid, n in whole if n == 1 and sid in first]
            rows.append(
                f"| {split} | {label} | {cut}/{len(paused)} | "
                f"{sum(1 for n in at700 if n > 1)}/{len(at700)} | "
                f"{_pct(delays, 50)} / {_pct(delays, 95)} | "
                f"{sum(1 for _, n in whole if n != 1)}/{len(whole)} |"
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--server", action="store_true", help="also play the set to the real server")
    ap.add_argument(
        "--modes",
        nargs="+",
        default=[":".join(m) for m in MODES],
        help="server modes, e.g. server_vad:500 semantic_vad:auto semantic_vad:auto:text",
    )
    args = ap.parse_args()
    settings = load_settings()
    utterances = build_set(settings.data_dir / "turn-taking-v2")
    n_paused = sum(1 for u in utterances if not u.complete)
    print(f"# turn-taking set: {n_paused} paused sentences, {len(utterances) - n_paused} complete")
    lines = signals(utterances)
    if args.server:
        modes = tuple(tuple(m.split(":")) for m in args.modes)
        work = Path(tempfile.mkdtemp(prefix="castwork-turns-"))
        lines += ["", *server(utterances, work, modes)]
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
