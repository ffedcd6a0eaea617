"""deploy/compose.yaml says what each service runs: every castwork command in it parses, every
setting it passes is one Castwork accepts (with sample keys for the ${...} placeholders), and
the balancer is told the addresses deploy/haproxy.cfg reads. (Compose itself is not run here:
no images can be pulled on this machine.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from base.errors import ConfigError
from castwork.cli import build_parser
from workers.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {
    "CASTWORK_VOICE_KEY": "voice-key-0123456789",
    "CASTWORK_MODELS_KEY": "models-key-0123456789",
    "CASTWORK_ADS_KEY": "ads-key-0123456789",
    "CASTWORK_S3_ACCESS_KEY": "s3-access-key",
    "CASTWORK_S3_SECRET_KEY": "s3-secret-key-0123456789",
}


def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def castwork_services() -> list[str]:
    return [name for name, s in services().items() if s.get("command", [None])[0] == "castwork"]


def filled(value: str) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: SAMPLE[m[1]], value)


def test_the_deployment_has_every_role() -> None:
    names = set(services())
    assert {"redis", "s3", "models", "balancer", "api", "worker"} <= names
    assert {"voice1", "voice2"} <= names
    # The API and the workers share the object store, not a disk.
    for name in ("api", "worker"):
        env = services()[name]["environment"]
        assert env["CASTWORK_STORAGE__URL"].startswith("s3://"), name
        assert "volumes" not in services()[name], name


@pytest.mark.parametrize("name", castwork_services())
def test_each_castwork_service_runs_a_command_and_settings_castwork_takes(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    service = services()[name]
    build_parser().parse_args(service["command"][1:])  # SystemExit on a wrong command
    for key, value in service["environment"].items():
        if key.startswith("CASTWORK_"):
            monkeypatch.setenv(key, filled(str(value)))
    monkeypatch.setenv("CASTWORK_DATA_DIR", str(tmp_path))
    try:
        load_settings()
    except ConfigError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{name}: {exc}")


def test_the_balancer_is_told_what_haproxy_cfg_reads() -> None:
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    read = set(re.findall(r"\$\{(CASTWORK_\w+)-", cfg))
    told = set(services()["balancer"]["environment"])
    assert read == told == {"CASTWORK_LB_BIND", "CASTWORK_VOICE1", "CASTWORK_VOICE2"}
    voices = [n for n in services() if n.startswith("voice")]
    for n in voices:  # each balanced server drains within compose's grace period
        grace = int(str(services()[n]["stop_grace_period"]).rstrip("s"))
        assert grace > load_settings().voice.drain_s
