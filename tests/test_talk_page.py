"""The talk page in a real headless Chromium, against `castwork voice` on the embedded models
(a subprocess, as a user runs it). Chromium's fake microphone plays a recorded sentence with a
short pause, over and over: a spoken turn completes (its transcript and the agent's answer
appear, the server's timings fill a row), and the next sentence, spoken over the answer,
interrupts it: playback stops and the page tells the server how much was heard
(``conversation.item.truncate``, confirmed by ``conversation.item.truncated``). A screenshot
after the turns is kept in ``tests/artifacts/talk-page.png``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.test_web import ARTIFACTS, CHROMIUM_FLAGS, _free_port, chromium  # noqa: F401
from voice.testing.clips import bundled_clip

pytestmark = [pytest.mark.browser, pytest.mark.models]
ROOT = Path(__file__).resolve().parent.parent


def _microphone(path: Path, pause_s: float) -> Path:
    """What the fake microphone plays (in a loop): a sentence, then a pause."""
    clip = bundled_clip()  # 16 kHz float32
    audio = np.concatenate([np.zeros(8_000), clip, np.zeros(int(16_000 * pause_s))])
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def voice_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data = tmp_path_factory.mktemp("talk")
    port = _free_port()
    log = open(data / "voice.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "castwork.cli", "voice", "--port", str(port)],
        env={**os.environ, "CASTWORK_DATA_DIR": str(data)},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (data / "voice.log").read_text()[-3000:]
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "castwork voice did not start"
            time.sleep(0.3)
        yield base, data
    finally:
        proc.terminate()
        proc.wait(timeout=40)
        log.close()


def test_the_page_is_plain_and_strict(voice_server: tuple[str, Path]) -> None:
    base, _ = voice_server
    page = httpx.get(base + "/talk")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    for name in ("talk.js", "worklets.js", "talk.css"):
        text = httpx.get(f"{base}/talk/{name}").text
        assert "http://" not in text and "https://" not in text, name  # no CDN, nothing external
    assert httpx.get(base + "/talk/config").json()["secret_url"] == "/talk/secret"
    # The page's secret endpoint answers only a script of a page here.
    assert httpx.post(base + "/talk/secret", content=b"{}").status_code == 403
    evil = {"X-Castwork-CSRF": "1", "Origin": "https://evil.example"}
    assert httpx.post(base + "/talk/secret", content=b"{}", headers=evil).status_code == 403


def test_a_spoken_turn_and_a_barge_in_in_chromium(
    chromium: Path,  # noqa: F811
    voice_server: tuple[str, Path],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    base, data = voice_server
    mic = _microphone(tmp_path / "mic.wav", pause_s=2.5)
    flags = [
        *CHROMIUM_FLAGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=flags)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/talk")
            page.click("#start")
            # The first turn: the sentence transcribed, an answer spoken, its timings shown.
            page.wait_for_selector("#transcript li.user", timeout=30_000)
            page.wait_for_selector("#transcript li.agent", timeout=30_000)
            page.wait_for_selector("#turns tbody tr", timeout=30_000)
            # The sentence again, over the answer: cut, and the server told what was heard.
            truncated = page.wait_for_selector("li.agent[data-truncated]", timeout=40_000)
            heard_ms = int(truncated.get_attribute("data-truncated") or "-1")
            user = page.inner_text("#transcript li.user >> nth=0").lower()
            row = [
                c.inner_text() for c in page.query_selector_all("#turns tbody tr >> nth=0 >> td")
            ]
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "talk-page.png"), full_page=True)
            page.click("#stop")
        finally:
            browser.close()
    assert not errors, errors
    assert "weather" in user and "tomorrow" in user, user
    assert row[1].endswith(" ms") and 0 < int(row[1].split()[0]) < 10_000, row
    assert 0 < heard_ms < 30_000
    # The server's own record agrees: a turn cut by the caller. The record is written when
    # the cut turn ends on the server, which may be after the page saw its truncate: wait.
    log = data / "logs" / "turns.jsonl"
    deadline = time.monotonic() + 15
    while '"barge_in"' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert '"barge_in"' in log.read_text(), log.read_text()[-2000:]
