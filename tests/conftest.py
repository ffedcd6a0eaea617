"""Shared fixtures: settings on the embedded defaults, real engines loaded once, real Redis."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voice.engines.asr import WhisperTranscriber
from voice.engines.factory import build_asr, build_tts, build_vad
from voice.engines.tts import PiperSynthesizer
from voice.engines.vad import SileroVad
from workers.settings import Settings, load_settings

ON_CI = os.environ.get("CI") == "true"


# --- Reliability report ----------------------------------------------------------------------
# A test marked ``@pytest.mark.reliability(kind, what)`` is a row of RELIABILITY.md: kind is
# "fault" (injected and survived) or "input" (hostile input refused). It may add figures as
# keyword arguments of the marker or with ``record_property("tried", n)`` (also "refused"). bench/reliability.py runs
# them with ``--reliability-report FILE`` and builds the table from that file.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-report", default=None, help="write reliability rows (JSON)")


_ROWS: list[dict[str, object]] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("reliability")
    if marker is None or item.config.getoption("--reliability-report") is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        kind, what = marker.args
        params = getattr(item, "callspec", None)
        if params is not None:  # "{mode}" in a parametrized test's description
            what = what.format(**params.params)
        _ROWS.append(
            {
                "test": item.nodeid,
                "kind": kind,
                "what": what,
                "outcome": report.outcome,
                "seconds": round(report.duration, 2),
                **marker.kwargs,
                **{str(k): v for k, v in report.user_properties},
            }
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--reliability-report")
    if path:
        Path(path).write_text(json.dumps(_ROWS, indent=1) + "\n")


@pytest.fixture(scope="session")
def settings() -> Settings:
    # The default data_dir keeps the assembled Whisper base between runs.
    return load_settings()


@pytest.fixture(scope="session")
def vad(settings: Settings) -> SileroVad:
    return build_vad(settings)


@pytest.fixture(scope="session")
def asr_tiny(settings: Settings) -> WhisperTranscriber:
    return build_asr(settings, "tiny.en")


@pytest.fixture(scope="session")
def piper(settings: Settings) -> PiperSynthesizer:
    tts = build_tts(settings)
    assert isinstance(tts, PiperSynthesizer)
    return tts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis of our own on a free loopback port, so tests never touch a shared one."""
    binary = shutil.which("redis-server")
    if binary is None:
        if ON_CI:
            pytest.fail("redis-server is not installed (./setup.sh installs it)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
