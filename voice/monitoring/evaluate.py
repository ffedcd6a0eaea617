"""`castwork eval`: play recorded user turns through a real voice session and score them.

For each *arm* (a name and some settings overrides, e.g. ``asr.model=base``) a real
:class:`voice.runtime.server.VoiceServer` is started on loopback with that arm's engines, and each
clip is streamed to it at real-time pace by the Realtime client, in its own session, like a
microphone. From what comes back and from the server's turn log we get, per clip: the user
transcript, the reply text and audio, the client's voice-to-voice, the turn record (stages,
recovery, outcome). Arms run one after another on the same clips, so they compare fairly.

When every arm is done, a *judge* Whisper (``base`` unless told otherwise; the same for all
arms, loaded only after the servers are gone so it costs them nothing) transcribes the reply
audio back: its WER against the reply text is the reply's intelligibility.

The scoring and the report are pure functions of :class:`ClipResult` lists.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from base.errors import ConfigError
from base.settings import with_overrides
from voice import audio as pcm
from voice.clients.realtime import CHUNK_MS, RealtimeClient
from voice.monitoring import textnorm, turnstats
from voice.monitoring.evalset import Clip
from voice.settings import VoiceSettings

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: dict[str, object] = field(default_factory=dict)

    @staticmethod
    def parse(text: str) -> Arm:
        """``NAME`` or ``NAME:setting=value[;setting=value...]``; values are JSON when they
        parse as JSON (numbers, lists, ``null``), else strings."""
        name, _, rest = text.partition(":")
        if not name.strip():
            raise ConfigError("--arm", f"{text!r}: give a name, e.g. base:asr.model=base")
        overrides: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in rest.split(";"))):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise ConfigError("--arm", f"{part!r}: write setting=value, e.g. asr.model=base")
            try:
                overrides[key.strip()] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key.strip()] = value
        return Arm(name.strip(), overrides)


@dataclass
class ClipResult:
    clip: str
    reference: str
    transcript: str | None  # what the session heard; None: no transcription came back
    reply_text: str
    status: str  # the response's status, or "no_response"
    client_v2v_ms: float | None
    session_id: str
    record: dict[str, Any] | None = None  # the server's turn record for this clip
    heard_reply: str | None = None  # the judge's transcription of the reply audio
    reply_audio: pcm.Float32Array | None = field(default=None, repr=False)


@dataclass
class ArmResult:
    arm: Arm
    clips: list[ClipResult]
    load_s: float


# --- running ------------------------------------------------------------------------------


async def play_clip(
    url: str,
    clip: Clip,
    *,
    timeout_s: float = 60.0,
    quiet_after_s: float = 2.0,
    api_key: str | None = None,
    language: str | None = None,
) -> ClipResult:
    """One session, one user turn: stream the clip, keep the microphone open with silence
    until the answer is done (or the server stays silent ``quiet_after_s`` after an empty
    transcript: a ``no_speech`` turn gets no response). ``language``: the session asks for
    it first (audio.input.transcription.language)."""
    client = await RealtimeClient.open(url, api_key=api_key)
    session_id = str(client.events[0].event["session"]["id"])
    if language is not None:
        transcription = {"model": "whisper", "language": language}
        session = {"type": "realtime", "audio": {"input": {"transcription": transcription}}}
        await client.send({"type": "session.update", "session": session})
        # The first session in a language may wait for its models to load.
        await client.wait_for("session.updated", timeout=timeout_s)
    silence = np.zeros(16_000 * CHUNK_MS // 1000, dtype=np.float32)

    async def keep_silent() -> None:
        while True:
            await client.stream(silence, 16_000)

    end = await client.stream(clip.audio(), 16_000)
    feeder = asyncio.create_task(keep_silent())
    status = "no_response"
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            types = client.types()
            if "response.done" in types:
                done = next(r.event for r in client.events if r.event["type"] == "response.done")
                status = str(done["response"]["status"])
                break
            heard = _transcript(client)
            if (
                heard is not None
                and not heard[0]
                and "response.created" not in types
                and time.monotonic() - heard[1] > quiet_after_s
            ):
                break
            await asyncio.sleep(0.05)
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        await client.close()
    first_audio = next(
        (r.at for r in client.events if r.event["type"] == "response.output_audio.delta"), None
    )
    heard = _transcript(client)
    return ClipResult(
        clip=clip.path.name,
        reference=clip.text,
        transcript=heard[0] if heard else None,
        reply_text=" ".join(
            str(r.event["transcript"])
            for r in client.events
            if r.event["type"] == "response.output_audio_transcript.done"
        ).strip(),
        status=status,
        client_v2v_ms=None if first_audio is None else round((first_audio - end) * 1000, 1),
        session_id=session_id,
        reply_audio=client.reply_audio(),
    )


def _transcript(client: RealtimeClient) -> tuple[str, float] | None:
    for r in client.events:
        if r.event["type"] == "conversation.item.input_audio_transcription.completed":
            return str(r.event["transcript"]), r.at
    return None


async def run_arm(
    settings: VoiceSettings,
    arm: Arm,
    clips: Sequence[Clip],
    work: Path,
    *,
    warmup: int = 1,
    progress: Progress = lambda _: None,
    language: str | None = None,
) -> ArmResult:
    """Start a real voice server with the arm's settings, play every clip, stop it."""
    from voice.runtime.assembly import load_runtimes
    from voice.runtime.latency import TurnLog
    from voice.runtime.server import VoiceServer

    turn_log_path = work / "turns.jsonl"
    await asyncio.to_thread(_fresh, turn_log_path)
    arm_settings = with_overrides(
        settings,
        # One arm per server: a configured live experiment does not split the eval's sessions.
        {
            **arm.overrides,
            "voice.host": "127.0.0.1",
            "voice.max_sessions": 4,
            "experiment.arms": [],
        },
    )
    t0 = time.perf_counter()
    (runtime,) = await asyncio.to_thread(load_runtimes, arm_settings)
    runtime.name = arm.name  # the turn records say which arm they came from
    load_s = time.perf_counter() - t0
    turn_log = TurnLog(turn_log_path)
    server = VoiceServer(
        arm_settings,
        runtime.engines,
        runtime.vad,
        policy=runtime.policy,
        turn_log=turn_log,
        runtimes=[runtime],
    )
    srv = await server.start("127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    results: list[ClipResult] = []
    try:
        for clip in list(clips)[:warmup]:
            progress(f"{arm.name}: warm-up ({clip.path.name})")
            await play_clip(url, clip, language=language)
        for i, clip in enumerate(clips, 1):
            progress(f"{arm.name}: clip {i}/{len(clips)} ({clip.path.name})")
            results.append(await play_clip(url, clip, language=language))
    finally:
        srv.close()
        await srv.wait_closed()
        turn_log.close()
    records = await asyncio.to_thread(_records_by_session, turn_log_path)
    for r in results:
        mine = records.get(r.session_id, [])
        # The user turn of the clip: the one that reached the LLM, else the last one.
        spoken = [x for x in mine if x["outcome"] not in ("no_speech", "abandoned")]
        chosen = spoken or mine
        r.record = chosen[-1] if chosen else None
    return ArmResult(arm, results, load_s)


def _fresh(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)


def _records_by_session(path: Path) -> dict[str, list[dict[str, Any]]]:
    records: dict[str, list[dict[str, Any]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            records.setdefault(rec["session_id"], []).append(rec)
    return records


def judge_replies(
    settings: VoiceSettings, arms: Sequence[ArmResult], model: str, language: str | None = None
) -> None:
    """Transcribe every reply back with one Whisper, the same for all arms."""
    from voice.engines.factory import build_asr

    judge = build_asr(settings, model, language=language)
    for arm in arms:
        for r in arm.clips:
            if r.reply_audio is not None and len(r.reply_audio) > 1600:
                r.heard_reply = judge.transcribe(r.reply_audio).text.strip()
            elif r.reply_text:
                r.heard_reply = ""


# --- scoring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmScore:
    name: str
    overrides: dict[str, object]
    clips: int
    asr: textnorm.WordErrors
    intelligibility: textnorm.WordErrors  # reply text vs the judge's hearing of its audio
    latency: turnstats.Group
    client_v2v: turnstats.Stats | None
    outcomes: dict[str, int]
    recovery: dict[str, int]
    models: dict[str, str]
    load_s: float


def score(arm: ArmResult, language: str = "en") -> ArmScore:
    asr = textnorm.corpus_errors([(r.reference, r.transcript or "") for r in arm.clips], language)
    intelligibility = textnorm.corpus_errors(
        [(r.reply_text, r.heard_reply or "") for r in arm.clips if r.heard_reply is not None],
        language,
    )
    turns = [turnstats.Turn.model_validate(r.record) for r in arm.clips if r.record]
    outcomes = Counter(r.record["outcome"] if r.record else r.status for r in arm.clips)
    recovery = Counter(code for t in turns for code in t.recovery)
    models: dict[str, str] = {}
    for t in turns:
        for role, name in t.models.items():
            models.setdefault(role, name)
    v2v = [r.client_v2v_ms for r in arm.clips if r.client_v2v_ms is not None]
    return ArmScore(
        name=arm.arm.name,
        overrides=arm.arm.overrides,
        clips=len(arm.clips),
        asr=asr,
        intelligibility=intelligibility,
        latency=turnstats.group_of(arm.arm.name, turns),
        client_v2v=turnstats.Stats.of(v2v),
        outcomes=dict(outcomes.most_common()),
        recovery=dict(recovery.most_common()),
        models=models,
        load_s=round(arm.load_s, 2),
    )


@dataclass(frozen=True)
class Difference:
    """One arm against the first, on the same clips, with 95% intervals."""

    arm: str
    baseline: str
    wer_change: float | None  # fraction: +0.05 is five points worse
    wer_ci: tuple[float, float] | None
    v2v_p95_change_ms: float | None
    v2v_p95_ci: tuple[float, float] | None

    @staticmethod
    def _says(ci: tuple[float, float] | None) -> str:
        if ci is None:
            return "not assessed"
        return "within noise" if ci[0] <= 0 <= ci[1] else "a real difference"

    def sentences(self) -> list[str]:
        out = []
        if self.wer_change is not None and self.wer_ci is not None:
            lo, hi = (100 * x for x in self.wer_ci)
            out.append(
                f"{self.arm} vs {self.baseline}: ASR WER {100 * self.wer_change:+.1f} points "
                f"(95% CI {lo:+.1f} to {hi:+.1f}): {self._says(self.wer_ci)}"
            )
        if self.v2v_p95_change_ms is not None and self.v2v_p95_ci is not None:
            lo, hi = self.v2v_p95_ci
            out.append(
                f"{self.arm} vs {self.baseline}: voice-to-voice P95 "
                f"{self.v2v_p95_change_ms:+.0f} ms (95% CI {lo:+.0f} to {hi:+.0f} ms): "
                f"{self._says(self.v2v_p95_ci)}"
            )
        return out


def paired_wer_change_ci(
    a: Sequence[tuple[str, str]],
    b: Sequence[tuple[str, str]],
    language: str = "en",
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """Corpus WER of B minus A over the same clips ((reference, hypothesis) in clip order),
    and its 95% interval from resampling clips (pairs kept together: the clips' own
    difficulty cancels out)."""
    ea = np.array([textnorm.word_errors(r, h, language).edits for r, h in a], dtype=float)
    eb = np.array([textnorm.word_errors(r, h, language).edits for r, h in b], dtype=float)
    words = np.array([textnorm.word_errors(r, "", language).reference_words for r, _ in a])
    change = (eb.sum() - ea.sum()) / max(words.sum(), 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ea), (resamples, len(ea)))
    diffs = (eb[idx].sum(axis=1) - ea[idx].sum(axis=1)) / np.maximum(words[idx].sum(axis=1), 1)
    lo, hi = np.percentile(diffs, (2.5, 97.5))
    return float(change), (float(lo), float(hi))


def differences(results: Sequence[ArmResult], language: str = "en") -> list[Difference]:
    """Each arm against the first: ASR WER (paired over clips) and server voice-to-voice P95."""
    if len(results) < 2:
        return []
    base = results[0]

    def v2v(arm: ArmResult) -> list[float]:
        return [
            float(r.record["durations_ms"]["voice_to_voice"])
            for r in arm.clips
            if r.record and "voice_to_voice" in r.record.get("durations_ms", {})
        ]

    out = []
    for arm in results[1:]:
        theirs = {r.clip: r for r in arm.clips}
        pairs = [(x, theirs[x.clip]) for x in base.clips if x.clip in theirs]  # same clips
        wer = wer_ci = None
        if pairs:
            wer, wer_ci = paired_wer_change_ci(
                [(x.reference, x.transcript or "") for x, _ in pairs],
                [(y.reference, y.transcript or "") for _, y in pairs],
                language,
            )
        va, vb = v2v(base), v2v(arm)
        p95 = ci = None
        if va and vb:
            p95 = float(np.percentile(vb, 95) - np.percentile(va, 95))
            ci = turnstats.percentile_change_ci(va, vb, 95)
        out.append(Difference(arm.arm.name, base.arm.name, wer, wer_ci, p95, ci))
    return out


def _pct(e: textnorm.WordErrors) -> str:
    if e.reference_words == 0:
        return "-"
    return f"{100 * e.rate:.1f}% ({e.edits}/{e.reference_words})"


def _p(s: turnstats.Stats | None) -> str:
    return "-" if s is None else f"{s.p50:.0f} / {s.p95:.0f}"


def format_report(
    scores: Sequence[ArmScore], results: Sequence[ArmResult], language: str = "en"
) -> str:
    """Arms side by side, then the clips where any arm misheard."""
    rate = "CER" if language in textnorm.BY_CHARACTER else "WER"
    head = ["", *(s.name for s in scores)]
    rows = [
        ["models", *(" ".join(f"{k}={v}" for k, v in sorted(s.models.items())) for s in scores)],
        ["clips", *(str(s.clips) for s in scores)],
        [f"ASR {rate}", *(_pct(s.asr) for s in scores)],
        [f"reply intelligibility ({rate})", *(_pct(s.intelligibility) for s in scores)],
        [
            "voice-to-voice P50 / P95 ms (server)",
            *(_p(s.latency.stats.get("voice_to_voice")) for s in scores),
        ],
        ["voice-to-voice P50 / P95 ms (client)", *(_p(s.client_v2v) for s in scores)],
    ]
    for metric in turnstats.METRICS[1:]:
        label = turnstats.LABELS[metric]
        rows.append([f"  {label} P50 / P95 ms", *(_p(s.latency.stats.get(metric)) for s in scores)])
    rows.append(
        ["outcomes", *(", ".join(f"{k} {v}" for k, v in s.outcomes.items()) for s in scores)]
    )
    rows.append(
        [
            "recovery",
            *((", ".join(f"{k} {v}" for k, v in s.recovery.items()) or "none") for s in scores),
        ]
    )
    rows.append(["engine load s", *(f"{s.load_s:.1f}" for s in scores)])
    lines = turnstats.table([head, *rows], right=lambda i: i > 0)

    misheard = []
    by_clip: dict[str, list[ClipResult]] = {}
    for arm in results:
        for r in arm.clips:
            by_clip.setdefault(r.clip, []).append(r)
    for clip, rs in by_clip.items():
        if any(textnorm.word_errors(r.reference, r.transcript or "", language).edits for r in rs):
            misheard.append(f"{clip}  ref: {rs[0].reference}")
            for arm, r in zip(results, rs, strict=True):
                misheard.append(f"    {arm.arm.name:>10}: {r.transcript!r}")
    if misheard:
        lines += ["", "clips misheard by at least one arm:", *misheard]
    diffs = differences(results, language)
    if diffs:
        lines += ["", "differences from the first arm (95% CI by resampling the clips):"]
        lines += [f"  {line}" for d in diffs for line in d.sentences()]
    lines += [
        "",
        (
            "WER: Whisper's English normalizer, then word edits / reference words over the set. "
            if rate == "WER"
            else "CER: Whisper's basic normalizer, numbers read out in Sino-Korean, then "
            "character edits / reference characters (spaces dropped) over the set. "
        )
        + "Latency: P50 / P95 over the clips (server: last speech frame -> first audio sent).",
    ]
    return "\n".join(lines)


def report_json(scores: Sequence[ArmScore], results: Sequence[ArmResult]) -> dict[str, Any]:
    def errors(e: textnorm.WordErrors) -> dict[str, Any]:
        rate = None if e.reference_words == 0 else round(e.rate, 4)
        return {
            "wer": rate,
            "reference_words": e.reference_words,
            "substitutions": e.substitutions,
            "deletions": e.deletions,
            "insertions": e.insertions,
        }

    out = []
    for s, arm in zip(scores, results, strict=True):
        out.append(
            {
                "arm": s.name,
                "overrides": s.overrides,
                "models": s.models,
                "clips": s.clips,
                "asr": errors(s.asr),
                "reply_intelligibility": errors(s.intelligibility),
                "latency_ms": {k: vars(v) for k, v in s.latency.stats.items()},
                "client_voice_to_voice_ms": vars(s.client_v2v) if s.client_v2v else None,
                "outcomes": s.outcomes,
                "recovery": s.recovery,
                "engine_load_s": s.load_s,
                "per_clip": [
                    {
                        "clip": r.clip,
                        "reference": r.reference,
                        "transcript": r.transcript,
                        "reply": r.reply_text,
                        "reply_heard": r.heard_reply,
                        "status": r.status,
                        "client_v2v_ms": r.client_v2v_ms,
                        "record": r.record,
                    }
                    for r in arm.clips
                ],
            }
        )
    return {"arms": out, "differences": [asdict(d) for d in differences(results)]}


def write_outputs(out_dir: Path, scores: Sequence[ArmScore], results: Sequence[ArmResult]) -> None:
    """report.json, report.txt, and each arm's replies as WAV files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report_json(scores, results), indent=1))
    (out_dir / "report.txt").write_text(format_report(scores, results) + "\n")
    for arm in results:
        replies = out_dir / _safe(arm.arm.name) / "replies"
        replies.mkdir(parents=True, exist_ok=True)
        for r in arm.clips:
            if r.reply_audio is not None and len(r.reply_audio):
                (replies / r.clip).write_bytes(pcm.wav_bytes(r.reply_audio, 16_000))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "arm"


async def evaluate(
    settings: VoiceSettings,
    clips: Sequence[Clip],
    arms: Sequence[Arm],
    out_dir: Path,
    *,
    judge: str | None = "base",
    warmup: int = 1,
    progress: Progress = lambda _: None,
    language: str | None = None,
) -> tuple[list[ArmScore], list[ArmResult]]:
    """Every arm over ``clips``; ``language``: each session asks for it (settings.languages),
    and transcripts and replies are scored in it."""
    if len({a.name for a in arms}) != len(arms):
        raise ConfigError("--arm", "arm names must differ")
    for arm in arms:  # fail on a bad override before loading any model
        with_overrides(settings, arm.overrides)
    if judge:  # and on a judge that does not resolve, before the arms run for minutes
        from voice.engines.registry import resolve_asr

        resolve_asr(judge, settings.model_cache)
    results = []
    for arm in arms:
        results.append(
            await run_arm(
                settings,
                arm,
                clips,
                out_dir / _safe(arm.name),
                warmup=warmup,
                progress=progress,
                language=language,
            )
        )
    if judge:
        progress(f"judging replies with whisper {judge}")
        await asyncio.to_thread(judge_replies, settings, results, judge, language)
    scored_in = language or settings.asr.language or "en"
    scores = [score(r, scored_in) for r in results]
    await asyncio.to_thread(write_outputs, out_dir, scores, results)
    return scores, results
