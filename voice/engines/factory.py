"""Build engines from settings: the one place that maps configuration to backends."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from voice.engines.asr import WhisperTranscriber
from voice.engines.contracts import ChatModel, Synthesizer, Transcriber
from voice.engines.llm import LlamaCppChat, OpenAIChat
from voice.engines.registry import resolve_asr, resolve_llm, resolve_tts, resolve_turn, resolve_vad
from voice.engines.remote import RemoteSynthesizer, RemoteTranscriber
from voice.engines.smart_turn import SmartTurn
from voice.engines.text_turn import TextTurn
from voice.engines.tts import EspeakSynthesizer, PiperSynthesizer
from voice.engines.vad import SileroVad
from voice.settings import LlmBackend, RemoteBackend, VoiceSettings

T = TypeVar("T")


def build_vad(settings: VoiceSettings) -> SileroVad:
    return SileroVad(resolve_vad(settings.vad.model).path)


def build_turn(settings: VoiceSettings) -> SmartTurn | None:
    """semantic_vad's end-of-turn model; None when ``vad.turn_model`` is empty."""
    ref = settings.vad.turn_model
    return SmartTurn(resolve_turn(ref).path, name=ref) if ref else None


def build_text_turn(settings: VoiceSettings) -> TextTurn | None:
    """semantic_vad's text end-of-turn model; None when ``vad.text_turn_model`` is empty."""
    ref = settings.vad.text_turn_model
    return TextTurn(resolve_llm(ref, settings.model_cache).path, name=ref) if ref else None


def build_asr(
    settings: VoiceSettings, ref: str | None = None, *, language: str | None = None
) -> WhisperTranscriber:
    """Whisper ``ref`` (default ``asr.model``) as ``settings.asr`` says, in ``language`` when
    given (the ad captions' aligner: the job's language)."""
    ref = ref or settings.asr.model
    model = resolve_asr(ref, settings.model_cache)
    a = settings.asr
    return WhisperTranscriber(
        model.path,
        name=f"whisper:{ref}",
        device=a.device,
        compute_type=a.compute_type,
        cpu_threads=a.cpu_threads,
        beam_size=a.beam_size,
        language=language or a.language,
        min_window_s=a.min_window_s,
        temperatures=tuple(a.temperatures),
        max_tokens_per_s=a.max_tokens_per_s,
    )


def build_chat(
    backend: LlmBackend, *, timeout_s: float = 30, cache_dir: Path | None = None
) -> ChatModel:
    """``cache_dir``: where a split GGUF is assembled (``settings.model_cache``)."""
    if backend.kind == "gguf":
        model = resolve_llm(backend.model, cache_dir)
        return LlamaCppChat(
            model.path,
            name=backend.label,
            n_threads=backend.n_threads,
            n_threads_batch=backend.n_threads_batch,
            context_tokens=backend.context_tokens,
            parallel=backend.parallel,
        )
    assert backend.url is not None  # checked by LlmBackend
    key = backend.api_key.get_secret_value() if backend.api_key else None
    return OpenAIChat(
        str(backend.url), model=backend.model, name=backend.label, api_key=key, timeout_s=timeout_s
    )


def build_chat_chain(settings: VoiceSettings) -> list[ChatModel]:
    return [
        build_chat(b, timeout_s=settings.llm.total_timeout_s, cache_dir=settings.model_cache)
        for b in settings.llm.backends
    ]


def build_espeak(voice: str) -> Synthesizer:
    """espeak-ng in ``voice`` (the only embedded voice for Korean)."""
    return EspeakSynthesizer(voice=voice, name=f"espeak:{voice}")


def build_tts(settings: VoiceSettings) -> Synthesizer:
    t = settings.tts
    if t.engine == "espeak":
        return EspeakSynthesizer(voice=t.espeak_voice)
    model = resolve_tts(t.voice)
    return PiperSynthesizer(
        model.path, name=f"piper:{t.voice}", length_scale=t.length_scale, threads=t.threads
    )


def build_fallback_tts(settings: VoiceSettings) -> Synthesizer | None:
    if settings.tts.fallback == "none":
        return None
    return EspeakSynthesizer(voice=settings.tts.espeak_voice)


def _key(backend: RemoteBackend) -> str | None:
    return backend.api_key.get_secret_value() if backend.api_key else None


def build_asr_chain(settings: VoiceSettings) -> list[Transcriber]:
    """The transcribers of ``asr.backends``, in order. (Without backends a runtime builds
    ``model`` and ``fallback_model`` itself, sharing one Whisper between experiment arms.)"""
    a = settings.asr
    return [
        build_asr(settings)
        if b.kind == "builtin"
        else RemoteTranscriber(
            str(b.url),
            model=b.model,
            name=b.label(""),
            api_key=_key(b),
            language=a.language,
            timeout_s=b.timeout_s,
        )
        for b in a.backends
    ]


def build_tts_chain(settings: VoiceSettings) -> list[Synthesizer]:
    """The synthesizers an answer is spoken by in order: ``tts.backends``, else ``engine``
    then ``fallback``."""
    if not settings.tts.backends:
        fallback = build_fallback_tts(settings)
        return [build_tts(settings), *([fallback] if fallback else [])]
    return [
        build_tts(settings)
        if b.kind == "builtin"
        else RemoteSynthesizer(
            str(b.url),
            model=b.model,
            voice=b.voice,
            name=b.label(""),
            api_key=_key(b),
            timeout_s=b.timeout_s,
        )
        for b in settings.tts.backends
    ]
