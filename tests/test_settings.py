from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from base.errors import ConfigError
from base.redact import mask_url, redacted
from castwork.cli import main
from voice.learning.lineage import of_settings, shaping_settings
from workers.settings import load_settings


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


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("amqp://user:pw@h", "amqp://user:***@h"),
        ("rediss://default:p%40ss@[::1]:6380/1", "rediss://default:***@[::1]:6380/1"),
        ("https://TOKEN@llm.example/v1", "https://***@llm.example/v1"),
        ("https://h/v1?api_key=k&model=x", "https://h/v1?api_key=***&model=x"),
        ("redis://h/0?password=pw&db=2", "redis://h/0?password=***&db=2"),
        ("https://h/cb#access_token=t&state=1", "https://h/cb#access_token=***&state=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("redis://:pw@host:port/0", "***"),  # malformed: masked whole
        ("http://[::1", "***"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_redacted_masks_urls_and_secret_named_values() -> None:
    data = {
        "url": "redis://:pw@h/0",
        "instructions": "Say hello. See https://user:pw@example.com for more.",  # prose: kept
        "arms": [{"overrides": {"llm.backends": [{"api_key": "sk-1", "model": "m"}]}}],
        "port": 6379,
        "api_key": None,
    }
    assert redacted(data) == {
        **data,
        "url": "redis://:***@h/0",
        "arms": [{"overrides": {"llm.backends": [{"api_key": "**********", "model": "m"}]}}],
    }


def test_castwork_config_prints_no_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CASTWORK_BROKER__URL", "redis://:zz-secret-1@10.0.0.5:6379/0")
    monkeypatch.setenv("CASTWORK_JOBS__STORE_URL", "redis://jobs:zz-secret-2@10.0.0.6/0")
    monkeypatch.setenv(
        "CASTWORK_LLM__BACKENDS",
        '[{"kind": "openai", "url": "https://me:zz-secret-3@llm.example/v1?api_key=zz-secret-4",'
        ' "model": "m", "api_key": "zz-secret-5"}]',
    )
    monkeypatch.setenv(
        "CASTWORK_EXPERIMENT__ARMS",
        '[{"name": "b", "overrides": {"llm.backends": [{"kind": "openai", '
        '"url": "https://x:zz-secret-6@h/v1", "model": "m", "api_key": "zz-secret-7"}]}}]',
    )
    monkeypatch.setenv("CASTWORK_API__LINK_SECRET", "zz-secret-8-0123456789")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "zz-secret" not in out, [line for line in out.splitlines() if "zz-secret" in line]
    printed = json.loads(out)
    assert printed["broker"]["url"] == "redis://:***@10.0.0.5:6379/0"
    assert printed["llm"]["backends"][0]["url"] == "https://me:***@llm.example/v1?api_key=***"


def test_turn_lineage_and_cases_hold_no_llm_password() -> None:
    settings = load_settings(
        asr={"fallback_model": "none"},
        llm={
            "backends": [
                {"kind": "openai", "url": "https://me:zz-secret@llm.example/v1", "model": "qwen"}
            ]
        },
    )
    models = of_settings(settings)["models"]
    assert isinstance(models, dict)
    assert models["llm"] == "openai:qwen@https://me:***@llm.example/v1"
    assert "zz-secret" not in json.dumps(shaping_settings(settings))


@pytest.mark.parametrize(
    ("overrides", "setting"),
    [
        ({"broker": {"url": "http://:zz-secret@h/0"}}, "broker.url"),
        ({"api": {"link_secret": "zz-secret"}}, "api.link_secret"),  # too short
    ],
)
def test_a_bad_secret_is_named_without_quoting_it(overrides: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert setting in str(info.value) and "zz-secret" not in str(info.value)
