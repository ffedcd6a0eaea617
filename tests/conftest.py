"""Shared fixtures: settings on the embedded defaults, real engines loaded once, real Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voice.asr import WhisperTranscriber
from voice.config import Settings, load_settings
from voice.factory import build_asr, build_tts, build_vad
from voice.tts import PiperSynthesizer
from voice.vad import SileroVad

ON_CI = os.environ.get("CI") == "true"


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
