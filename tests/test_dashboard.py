"""The operator side of the API: the latency dashboard in a real headless Chromium, its data
endpoint, Prometheus ``/metrics``, and who may see them.

The dashboard reads the turn log of a real ``bench/voice_latency.py`` run
(``tests/data/voice-latency-turns.jsonl``); the live-session tile counts real WebSocket
sessions open on a voice server in this process (scripted engines). The figures the page
shows are checked against numpy over the same lines, and a screenshot is kept in
``tests/artifacts/`` (and ``$CASTWORK_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from voice.clients.realtime import RealtimeClient
from voice.runtime import latency
from voice.testing.harness import fake_engines, running_server
from workers.api import create_app
from workers.settings import Settings, load_settings
from workers.store import JobStore

from .test_latency_cli import REAL_LOG, direct, lines
from .test_web import CHROMIUM_FLAGS, _free_port, _wait_until, chromium  # noqa: F401

OPS_KEY = "ops-key-0123456789abcdef"
MERCHANT_KEY = "merchant-key-0123456789"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def app_for(settings: Settings, **kw: Any) -> TestClient:
    # The store is never touched by these endpoints: no Redis needed.
    store = JobStore.from_url("redis://127.0.0.1:1/0")
    return TestClient(
        create_app(settings, store=store, broker=StubBroker(), **kw),
        base_url="http://127.0.0.1",
        headers={"X-Castwork-CSRF": "1"},
    )


def js_round(x: float) -> int:
    return math.floor(x + 0.5)


def test_turns_endpoint_figures_match_the_log(tmp_path: Path) -> None:
    log = tmp_path / "turns.jsonl"
    shutil.copy(REAL_LOG, log)
    client = app_for(load_settings(data_dir=tmp_path, log={"turn_log": log}))
    data = client.get("/v1/ops/turns", params={"window": "all"}).json()
    rows = lines()
    assert data["turns"] == len(rows)
    for metric in ("voice_to_voice", "asr", "llm_first_token"):
        assert data["stats"][metric]["p95"] == pytest.approx(direct(rows, metric)["p95"])
    assert sum(data["histogram"]["counts"]) == direct(rows, "voice_to_voice")["count"]
    assert sum(p["n"] for p in data["series"]) == direct(rows, "voice_to_voice")["count"]
    assert len(data["recent"]) == min(40, len(rows))
    # A window with nothing in it is empty, not an error.
    newest = max(r["ts"] for r in rows)
    client.app.state.ops.clock = lambda: newest + 2 * 86_400  # type: ignore[attr-defined]
    assert client.get("/v1/ops/turns", params={"window": "15m"}).json()["turns"] == 0
    assert client.get("/v1/ops/turns", params={"window": "2d"}).status_code == 422


def test_operator_endpoints_need_an_operator_key(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        api={"keys": {"shop": MERCHANT_KEY}, "ops_keys": [OPS_KEY]},
    )
    client = app_for(settings, require_keys=True)
    for path in ("/v1/ops/turns", "/metrics"):
        assert client.get(path).status_code == 401
        merchant = client.get(path, headers={"Authorization": f"Bearer {MERCHANT_KEY}"})
        assert merchant.status_code == 401
        assert merchant.json()["error"]["code"] == "unauthorized"
        assert client.get(path, headers={"Authorization": f"Bearer {OPS_KEY}"}).status_code == 200
        assert client.get(path, headers={"X-API-Key": OPS_KEY}).status_code == 200
    assert client.get("/dashboard").status_code == 200  # the page itself holds no data

    # Keys required but no operator keys set: closed, and it says how to open them.
    closed = app_for(
        load_settings(data_dir=tmp_path, api={"keys": {"shop": MERCHANT_KEY}}), require_keys=True
    )
    r = closed.get("/metrics", headers={"Authorization": f"Bearer {MERCHANT_KEY}"})
    assert r.status_code == 403 and "api.ops_keys" in r.json()["error"]["message"]


async def test_metrics_count_real_turns(tmp_path: Path) -> None:
    """A spoken turn on the voice server moves the histograms and counters that the API's
    /metrics serves (one registry per process, as in `castwork serve`)."""

    def sample(text: str, name: str, **labels: str) -> float:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    client = app_for(load_settings(data_dir=tmp_path))
    before = client.get("/metrics").text
    async with running_server(tmp_path, fake_engines()) as (url, _log, _):
        rc = await RealtimeClient.open(url)
        from voice.testing.harness import utterance

        await rc.stream(utterance(), 16_000, realtime=False)
        await rc.wait_for("response.done")
        assert sample(client.get("/metrics").text, "castwork_sessions_active") >= 1
        await rc.close()
    after = client.get("/metrics").text
    for stage in ("voice_to_voice", "asr", "llm_first_token", "tts_first_audio"):
        name = "castwork_turn_stage_seconds_count"
        assert sample(after, name, stage=stage) == sample(before, name, stage=stage) + 1
    assert sample(after, "castwork_turns_total", outcome="spoken") == (
        sample(before, "castwork_turns_total", outcome="spoken") + 1
    )
    v2v = "castwork_voice_to_voice_seconds_bucket"
    assert (
        sample(after, v2v, outcome="spoken", le="+Inf")
        == sample(before, v2v, outcome="spoken", le="+Inf") + 1
    )


# --- the page in Chromium -------------------------------------------------------------------


class LiveSessions:
    """Real sessions held open on a voice server running in a thread of this process."""

    def __init__(self, tmp_path: Path, count: int) -> None:
        self.tmp_path, self.count = tmp_path, count
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.release: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))

    async def _run(self) -> None:
        self.release = asyncio.Event()
        async with running_server(self.tmp_path / "voice", fake_engines()) as (url, _log, _):
            clients = [await RealtimeClient.open(url) for _ in range(self.count)]
            self.ready.set()
            await self.release.wait()
            for c in clients:
                await c.close()

    def __enter__(self) -> LiveSessions:
        (self.tmp_path / "voice").mkdir()
        self.thread.start()
        assert self.ready.wait(30), "voice sessions did not open"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.release is not None
        self.loop.call_soon_threadsafe(self.release.set)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "logs" / "turns.jsonl"
    log.parent.mkdir()
    # The recorded turns moved in time to end a minute ago, keeping their spacing: "all" spans
    # the first turn to now, and a log ageing with the calendar would shrink into one bucket.
    rows = lines()
    shift = time.time() - 60 - max(r["ts"] for r in rows)
    log.write_text("".join(json.dumps({**r, "ts": r["ts"] + shift}) + "\n" for r in rows))
    settings = load_settings(data_dir=tmp_path, log={"turn_log": log})
    app = create_app(
        settings,
        store=JobStore.from_url("redis://127.0.0.1:1/0"),
        broker=StubBroker(),
        live_sessions=latency.live_sessions,
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", log_config=None, lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started, 15, "uvicorn did not start")
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.mark.browser
def test_dashboard_draws_real_turns_in_chromium(
    chromium: Path,  # noqa: F811 - the fixture imported from test_web
    dashboard_url: tuple[str, Path],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    url, log = dashboard_url
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    v2v = direct(rows, "voice_to_voice")
    stages = ("endpointing", "asr", "llm_first_token", "first_piece", "tts_first_audio", "send")
    recent = sorted(rows, key=lambda r: r["ts"])[-40:]
    errors: list[str] = []
    baseline = latency.live_sessions()
    with LiveSessions(tmp_path, 2), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/dashboard?window=all")

        def updated() -> Any:
            return page.evaluate("document.body.dataset.updated || ''")

        _wait_until(lambda: updated() != "", 20, "the dashboard never drew")
        assert page.inner_text("#turns") == str(len(rows))
        assert page.inner_text("#p50") == f"{js_round(v2v['p50'])} ms"
        assert page.inner_text("#p95") == f"{js_round(v2v['p95'])} ms"
        assert page.inner_text("#live") == str(baseline + 2)
        # One stacked bar per recent turn, one segment per stage it has.
        assert page.get_attribute("#chart-stages", "data-bars") == str(len(recent))
        segments = sum(1 for r in recent for s in stages if r["durations_ms"].get(s))
        assert page.locator("#chart-stages rect.stage").count() == segments
        first = page.locator("#chart-stages rect.stage").first
        assert float(first.get_attribute("data-ms") or 0) == pytest.approx(
            round(
                next(
                    recent[0]["durations_ms"][s] for s in stages if recent[0]["durations_ms"].get(s)
                ),
                1,
            )
        )
        assert int(page.get_attribute("#chart-series", "data-points") or 0) > 1
        assert page.locator("#chart-series path.p95").count() == 1
        assert page.get_attribute("#chart-histogram", "data-total") == str(v2v["count"])
        assert "outcome spoken" in page.inner_text("#recovery")
        stats_row = page.locator("#stats tbody tr").first.inner_text().split("\t")
        assert stats_row[:3] == ["voice-to-voice", str(v2v["count"]), str(js_round(v2v["p50"]))]

        # It refreshes itself: turns appended to the log appear without a reload.
        newest = max(r["ts"] for r in rows)
        with log.open("a") as f:
            for i, r in enumerate(rows[:3]):
                f.write(json.dumps({**r, "ts": newest + 1 + i, "turn_id": f"turn_new{i}"}) + "\n")
        _wait_until(lambda: page.inner_text("#turns") == str(len(rows) + 3), 15, "no refresh")
        time.sleep(0.3)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        if dest := os.environ.get("CASTWORK_TEST_ARTIFACTS"):
            Path(dest).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(dest) / shot.name)
        browser.close()
    assert errors == []
    assert np.isfinite(v2v["p95"])
