"""`castwork doctor`: load every configured engine once, time it, and smoke-test it for real."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from base.errors import CastworkError
from base.redact import mask_url
from castwork.serve import persistence
from media import ffmpeg
from voice.audio import FRAME_SAMPLES
from voice.engines.contracts import ChatModel, Message, Synthesizer
from voice.engines.factory import (
    build_asr,
    build_chat,
    build_fallback_tts,
    build_text_turn,
    build_tts,
    build_turn,
    build_vad,
)
from voice.engines.registry import resolve_asr, resolve_llm, resolve_tts, resolve_turn, resolve_vad
from voice.testing.clips import bundled_clip
from workers.broker import broker_url, ping
from workers.settings import Settings

T = TypeVar("T")


@dataclass
class Result:
    name: str
    ok: bool
    source: str = ""
    load_s: float | None = None
    smoke: str = ""


def _timed(load: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    obj = load()
    return obj, time.perf_counter() - t0


def check_vad(settings: Settings) -> Result:
    model = resolve_vad(settings.vad.model)
    vad, load_s = _timed(lambda: build_vad(settings))
    clip = bundled_clip()
    frames = [
        clip[i : i + FRAME_SAMPLES] for i in range(0, len(clip) - FRAME_SAMPLES + 1, FRAME_SAMPLES)
    ]
    t0 = time.perf_counter()
    probs = [vad.speech_probability(f) for f in frames]
    per_frame_ms = (time.perf_counter() - t0) / len(frames) * 1000
    speech = np.mean(np.array(probs) > settings.vad.threshold)
    return Result(
        "vad",
        bool(speech > 0.3),
        f"{model.identity} {model.path}",
        load_s,
        f"{speech:.0%} of the clip's frames are speech, {per_frame_ms:.2f} ms/frame",
    )


def check_turn(settings: Settings) -> list[Result]:
    """semantic_vad's end-of-turn models, where configured: the sound at the end of the
    bundled clip, and the words of a request cut short and whole."""
    results = []
    if settings.vad.turn_model:
        model = resolve_turn(settings.vad.turn_model)
        turn, load_s = _timed(lambda: build_turn(settings))
        assert turn is not None
        ended = np.concatenate([bundled_clip(), np.zeros(3200, np.float32)])  # + 200 ms
        t0 = time.perf_counter()
        p = turn.probability(ended)
        ms = (time.perf_counter() - t0) * 1000
        results.append(
            Result(
                "turn",
                0.0 <= p <= 1.0,
                f"{model.identity} {model.path}",
                load_s,
                f"P(finished) {p:.2f} at the end of a whole sentence, {ms:.0f} ms",
            )
        )
    if settings.vad.text_turn_model:
        ref = settings.vad.text_turn_model
        model = resolve_llm(ref, settings.model_cache)
        reader, load_s = _timed(lambda: build_text_turn(settings))
        assert reader is not None
        cut, whole = "Can I pay with", "Can I pay with a credit card?"
        p_cut, p_whole = reader.probability(cut), reader.probability(whole)
        results.append(
            Result(
                "turn text",
                p_cut < p_whole,
                f"{model.identity} {model.path}",
                load_s,
                f"P(ends) {p_cut:.3f} after {cut!r}, {p_whole:.3f} after {whole!r}",
            )
        )
    return results


def check_asr(settings: Settings, ref: str, label: str) -> Result:
    model = resolve_asr(ref, settings.model_cache)
    asr, load_s = _timed(lambda: build_asr(settings, ref))
    t0 = time.perf_counter()
    transcript = asr.transcribe(bundled_clip())
    took = time.perf_counter() - t0
    ok = "hello" in transcript.text.lower() and "weather" in transcript.text.lower()
    return Result(
        label, ok, f"{model.identity} {model.path}", load_s, f"{transcript.text!r} in {took:.2f} s"
    )


async def _first_reply(chat: ChatModel) -> tuple[str, float, float]:
    t0 = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    messages: list[Message] = [{"role": "user", "content": "Say hello in one short sentence."}]
    async for piece in chat.stream(messages, max_tokens=24, temperature=0.0):
        first = first if first is not None else time.perf_counter() - t0
        if isinstance(piece, str):  # no tools offered: text only, but the stream may say more
            parts.append(piece)
    return "".join(parts).strip(), first or 0.0, time.perf_counter() - t0


def check_llm(settings: Settings) -> list[Result]:
    results = []
    for i, backend in enumerate(settings.llm.backends):
        label = f"llm[{i}] {backend.label}"
        if backend.kind == "gguf":
            model = resolve_llm(backend.model, settings.model_cache)
            source = f"{model.identity} {model.path}"
        else:
            source = f"openai-compatible {mask_url(str(backend.url))} model={backend.model}"
        try:
            chat, load_s = _timed(
                functools.partial(
                    build_chat,
                    backend,
                    timeout_s=settings.llm.total_timeout_s,
                    cache_dir=settings.model_cache,
                )
            )
            text, first, total = asyncio.run(_first_reply(chat))
            results.append(
                Result(
                    label,
                    bool(text),
                    source,
                    load_s,
                    f"{text!r} first token {first * 1000:.0f} ms, all {total:.2f} s",
                )
            )
        except CastworkError as exc:
            results.append(Result(label, False, source, None, str(exc)))
    return results


def _speak(tts: Synthesizer, text: str) -> str:
    t0 = time.perf_counter()
    first: float | None = None
    samples = 0
    for chunk in tts.synthesize(text):
        first = first if first is not None else time.perf_counter() - t0
        samples += len(chunk)
    total = time.perf_counter() - t0
    audio_s = samples / tts.sample_rate
    return f"{audio_s:.2f} s of audio, first chunk {(first or 0) * 1000:.0f} ms, real-time factor {total / max(audio_s, 1e-9):.2f}"


def check_tts(settings: Settings) -> list[Result]:
    sentence = "Your order is on its way and should arrive tomorrow."
    results = []
    if settings.tts.engine == "piper":
        model = resolve_tts(settings.tts.voice)
        source = f"{model.identity} {model.path}"
    else:
        source = f"espeak-ng voice {settings.tts.espeak_voice}"
    tts, load_s = _timed(lambda: build_tts(settings))
    results.append(
        Result(f"tts {settings.tts.engine}", True, source, load_s, _speak(tts, sentence))
    )
    fallback, load_s = _timed(lambda: build_fallback_tts(settings))
    if fallback is not None:
        results.append(
            Result(
                "tts fallback",
                True,
                f"espeak-ng voice {settings.tts.espeak_voice}",
                load_s,
                _speak(fallback, sentence),
            )
        )
    return results


def check_ffmpeg() -> Result:
    ver, load_s = _timed(ffmpeg.version)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        p = ffmpeg.smoke_test(Path(tmp))
        took = time.perf_counter() - t0
    ok = p.video_codec == "h264" and p.audio_codec == "aac"
    return Result(
        "ffmpeg",
        ok,
        f"ffmpeg {ver} {ffmpeg.binary()}",
        load_s,
        f"encoded {p.duration:.2f} s {p.width}x{p.height} {p.video_codec}/{p.audio_codec} in {took:.2f} s",
    )


def check_broker(settings: Settings) -> Result:
    url = broker_url(settings)
    shown = mask_url(url) if settings.broker.url else f"{url} (local default)"
    version, load_s = _timed(lambda: ping(url))
    smoke = f"{version} answers PING"
    if url.startswith(("redis://", "rediss://")):
        kept, said = persistence(url)
        smoke += {
            "aof": "; keeps an append-only file",
            "off": f"; keeps no append-only file ({said}): queued jobs are lost if it restarts",
            "unknown": f"; cannot tell whether it keeps an append-only file ({said})",
        }[kept]
    return Result("broker", True, shown, load_s, smoke)


def check_storage(settings: Settings) -> Result:
    from workers.storage.s3 import S3Storage

    storage = S3Storage(settings.storage, settings.jobs_dir)
    _, load_s = _timed(storage.check)
    took = storage.round_trip()
    return Result(
        "storage", True, storage.where, load_s, f"wrote, read and deleted in {took:.3f} s"
    )


def _guard(name: str, fn: Callable[[], Result | list[Result]]) -> list[Result]:
    try:
        out = fn()
    except (CastworkError, OSError) as exc:
        return [Result(name, False, smoke=f"{type(exc).__name__}: {exc}")]
    return out if isinstance(out, list) else [out]


def run_checks(settings: Settings, *, only: set[str] | None = None) -> list[Result]:
    checks: list[tuple[str, Callable[[], Result | list[Result]]]] = [
        ("vad", lambda: check_vad(settings)),
        ("asr", lambda: check_asr(settings, settings.asr.model, "asr")),
    ]
    if settings.asr.fallback_model:
        fb = settings.asr.fallback_model
        checks.append(("asr", lambda: check_asr(settings, fb, "asr fallback")))
    checks += [
        ("turn", lambda: check_turn(settings)),
        ("llm", lambda: check_llm(settings)),
        ("tts", lambda: check_tts(settings)),
        ("ffmpeg", check_ffmpeg),
        ("broker", lambda: check_broker(settings)),
    ]
    if settings.storage.url:  # the local disk needs no check: ffmpeg's above wrote to it
        checks.append(("storage", lambda: check_storage(settings)))
    results: list[Result] = []
    for name, fn in checks:
        if only is None or name in only:
            results += _guard(name, fn)
    return results


def report(results: list[Result]) -> str:
    lines = []
    for r in results:
        load = f"load {r.load_s:6.2f} s" if r.load_s is not None else "load      -  "
        lines.append(f"{'ok  ' if r.ok else 'FAIL'} {r.name:<24} {load}  {r.smoke}")
        if r.source:
            lines.append(f"     {'':<24} from {r.source}")
    failed = sum(not r.ok for r in results)
    lines.append(f"{len(results) - failed} ok, {failed} failed")
    return "\n".join(lines)
