from __future__ import annotations

from pathlib import Path

import pytest

from voice.config import load_settings
from voice.errors import ConfigError
from workers.cli import main


def test_defaults_are_the_embedded_models() -> None:
    s = load_settings()
    assert (s.asr.model, s.asr.fallback_model) == ("tiny.en", "base")
    assert s.llm.backends[0].kind == "gguf" and s.llm.backends[0].model == "smollm2-135m"
    assert (s.tts.engine, s.tts.voice, s.tts.fallback) == ("piper", "joe", "espeak")
    assert s.vad.model == "silero"


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "castwork.toml"
    cfg.write_text('[asr]\nmodel = "base"\nbeam_size = 3\n[voice]\nport = 9000\n')
    monkeypatch.setenv("CASTWORK_VOICE__PORT", "9100")
    s = load_settings(cfg)
    assert s.asr.model == "base" and s.asr.beam_size == 3
    assert s.voice.port == 9100


def test_model_path_and_openai_backend(tmp_path: Path) -> None:
    model_dir = tmp_path / "whisper-small"
    model_dir.mkdir()
    s = load_settings(
        asr={"model": str(model_dir)},
        llm={
            "backends": [{"kind": "openai", "url": "http://127.0.0.1:8000/v1", "model": "qwen"}, {}]
        },
    )
    assert s.asr.model == str(model_dir)
    assert [b.kind for b in s.llm.backends] == ["openai", "gguf"]


@pytest.mark.parametrize(
    ("env", "value", "setting"),
    [
        ("CASTWORK_ASR__MODEL", "/no/such/model", "asr.model [CASTWORK_ASR__MODEL]"),
        ("CASTWORK_VOICE__PORT", "eighty", "voice.port [CASTWORK_VOICE__PORT]"),
        ("CASTWORK_VOICE__PORT", "70000", "voice.port [CASTWORK_VOICE__PORT]"),
        ("CASTWORK_VAD__THRESHOLD", "1.5", "vad.threshold [CASTWORK_VAD__THRESHOLD]"),
        ("CASTWORK_BROKER__URL", "http://x", "broker.url [CASTWORK_BROKER__URL]"),
        ("CASTWORK_LLM__BACKENDS", '[{"kind": "openai", "url": "nope"}]', "llm.backends[0].url"),
        ("CASTWORK_TTS__VOIEC", "x", "tts.voiec"),
    ],
)
def test_bad_setting_fails_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: str,
    value: str,
    setting: str,
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert setting in str(info.value)
    # Through the CLI: exit 2, one line on stderr, no traceback.
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and setting in err and "Traceback" not in err


def test_bad_config_file_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[asr\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "missing.toml")
