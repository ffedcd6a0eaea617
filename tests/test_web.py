"""The web page in a real headless Chromium, against the real stack: uvicorn serving the app,
a RedisBroker, and an in-process dramatiq worker that renders the ad for real.

A merchant's whole path: enter the API key, fill the form, upload two photos, watch the
progress bar move, then play the result in the page's ``<video>`` and download it through
the signed link. And the keyless API (loopback only) against pages of other sites in the
same browser: DNS rebinding (``--host-resolver-rules`` points ``evil.test`` at 127.0.0.1),
a cross-site upload, and a form from another page on this machine; none makes a job, while
the page's own form still does. The driver is Playwright's Python API on Debian's Chromium
(``/usr/bin/chromium``, never a downloaded browser build). A screenshot of the finished page
is kept in ``tests/artifacts/`` (and copied to ``$CASTWORK_TEST_ARTIFACTS`` when set).
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import shutil
import socket
import string
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import uvicorn
from dramatiq.brokers.stub import StubBroker
from fastapi import FastAPI
from PIL import Image

from media.pipeline import NarrationEngines
from tests.ad_helpers import made_font, made_track
from workers.actors import Context, declare
from workers.api import create_app
from workers.broker import make_broker
from workers.settings import Settings, load_settings
from workers.storage import open_storage
from workers.storage.local import job_root
from workers.store import JobStore

pytestmark = [pytest.mark.browser, pytest.mark.redis]

ON_CI = os.environ.get("CI") == "true"
CHROMIUM = Path(os.environ.get("CASTWORK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
API_KEY = "web-test-key-0123456789abcdef"
RENDER_TIMEOUT_S = 120


def _unavailable(reason: str) -> None:
    if ON_CI:
        pytest.fail(f"{reason} (on CI the browser test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    url: str
    settings: Settings
    store: JobStore


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """uvicorn serving ``app`` on a free loopback port, in a thread; yields its URL."""
    port = _free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        log_config=None,  # leave the test process's logging as it is
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started, 15, "uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """uvicorn + the app + a dramatiq worker, all in this process, on a private Redis."""
    settings = load_settings(data_dir=tmp_path, api={"keys": {"shop": API_KEY}})
    store = JobStore.from_url(redis_url)
    store.prefix = f"web-{uuid.uuid4().hex[:12]}"
    broker = make_broker(settings, redis_url)
    declare(Context(settings, store, broker, NarrationEngines(settings), open_storage(settings)))
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=200)
    worker.start()
    try:
        with _serving(create_app(settings, store=store, broker=broker)) as url:
            yield Stack(url, settings, store)
    finally:
        worker.stop(timeout=10_000)
        broker.close()
        store.r.close()


@pytest.fixture
def keyless(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """The app as `castwork serve` runs it by default: no keys, loopback only. Jobs are
    queued on a stub broker and never run: these tests are about who may queue one."""
    settings = load_settings(data_dir=tmp_path)
    store = JobStore.from_url(redis_url)
    store.prefix = f"web-{uuid.uuid4().hex[:12]}"
    try:
        with _serving(create_app(settings, store=store, broker=StubBroker())) as url:
            yield Stack(url, settings, store)
    finally:
        store.r.close()


def _wait_until(check: Any, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    """Two real photographs (scikit-image's public-domain samples) as JPEG uploads."""
    from skimage import data

    paths = []
    for sample in ("coffee", "chelsea"):
        path = tmp_path / f"{sample}.jpg"
        Image.fromarray(getattr(data, sample)()).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def _save_artifact(source: Path) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / source.name
    shutil.copyfile(source, kept)
    extra = os.environ.get("CASTWORK_TEST_ARTIFACTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, Path(extra) / source.name)
    return kept


# The page's video, once it has metadata (or an error): what the browser made of the file.
VIDEO_STATE = """() => {
  const v = document.querySelector('#results video');
  if (!v) return null;
  return {readyState: v.readyState, duration: v.duration, error: v.error && v.error.message,
          src: v.currentSrc, format: v.dataset.format};
}"""


# The elements that stick out past the right edge of the window (for a failure message).
TOO_WIDE = """() => Array.from(document.querySelectorAll('body *'))
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
  .slice(0, 8)
  .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className}`)"""


def test_merchant_makes_an_ad_in_the_browser(
    chromium: Path, stack: Stack, photos: list[Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.goto(stack.url)

            # The server wants a key: the page asks for it and keeps it.
            page.wait_for_selector("#auth[open]")
            page.get_by_label("Your API key").fill(API_KEY)
            page.get_by_role("button", name="Save key").click()
            expect(page.locator("#auth-status")).to_have_text("Key saved.")
            page.wait_for_selector("#template option[value='sale']", state="attached")

            page.get_by_label("Template").select_option("showcase")
            page.get_by_label("Headline").fill("Fresh roasted coffee")
            page.get_by_label("Price").fill("$12")
            page.get_by_label("Call to action").fill("Order today")
            page.get_by_label("Store name").fill("Blue Door")
            # Copy drafts from the facts: no copywriter model is configured here, so the
            # template's copy is the one draft, and the page says why; picking it fills the form.
            page.get_by_role("button", name="Suggest copy from these facts").click()
            expect(page.locator("#suggest-status")).to_contain_text("template's copy")
            page.locator("#drafts .draft").first.click()
            expect(page.get_by_label("Narration")).to_have_value(
                "Fresh roasted coffee. Yours for $12. Shop now."
            )
            page.get_by_label("Call to action").fill("Order today")
            page.get_by_label("Brand colours").check()  # the page's default pair
            # A brand kit: the font and music chosen here are checked and kept on the server.
            font = tmp_path / "Block.ttf"
            font.write_bytes(made_font(string.printable.strip() + "’…–"))
            track = made_track(tmp_path / "jingle.mp3", 4.0, hz=415.3)
            page.get_by_label("Font").set_input_files(str(font))
            page.get_by_label("Music track").set_input_files(str(track))
            page.get_by_role("button", name="Keep these as my brand kit").click()
            expect(page.locator("#brand-status")).to_have_text(
                "Kept brand kit: colours #1D3557 and #E63946, font Castwork Block (en), "
                "music jingle.mp3 (4 s)."
            )
            page.get_by_label("9:16").uncheck()
            page.get_by_label("16:9").uncheck()
            page.get_by_label("Product photos").set_input_files([str(p) for p in photos])
            page.wait_for_selector("#photo-previews img >> nth=1")
            page.get_by_role("button", name="Make my ad").click()

            percents = _follow_progress(page)
            assert any(0 < p < 100 for p in percents), f"the bar never moved: {percents}"
            assert percents == sorted(percents), f"the bar went backwards: {percents}"

            assert page.get_attribute("#job", "data-status") == "done", page.inner_text("#job")
            video = _poll(page, VIDEO_STATE, lambda v: v and (v["readyState"] >= 1 or v["error"]))
            assert video["error"] is None and video["readyState"] >= 1, video
            assert video["format"] == "1:1" and video["duration"] > 5, video
            assert "signature=" in video["src"]  # a <video> cannot send the key: a signed URL
            assert page.locator("#results video").count() == 1

            played = page.evaluate(
                """async () => {
                  const v = document.querySelector('#results video');
                  v.muted = true;
                  await v.play();
                  await new Promise((r) => setTimeout(r, 800));
                  v.pause();
                  return v.currentTime;
                }"""
            )
            assert played > 0.2, f"the video did not play (currentTime {played})"

            href = page.get_by_role("link", name="Download video").get_attribute("href")
            assert href is not None
            download = page.request.get(stack.url + href)  # no key: the link is signed
            assert download.status == 200 and download.headers["content-type"] == "video/mp4"
            assert download.body()[4:8] == b"ftyp"
            thumb = page.get_by_role("img", name="1:1 thumbnail")
            assert thumb.evaluate("img => img.naturalWidth") > 0

            # The job was made in the brand colours picked on the page (its kept request).
            job_id = page.get_attribute("#job", "data-job-id") or ""
            request = job_root(stack.settings, "shop", job_id).request_file
            spec = json.loads(request.read_text())
            assert spec["brand"] == {"primary": "#1D3557", "accent": "#E63946"}, spec
            folder = request.parent.parent
            assert (folder / spec["font"]).read_bytes() == font.read_bytes()
            assert (folder / spec["music_track"]).read_bytes() == track.read_bytes()

            page.get_by_role("button", name="Refresh").click()
            recent = page.locator("#recent-list li")
            assert recent.count() == 1 and "Fresh roasted coffee" in recent.inner_text()

            shot = tmp_path / "web-result.png"
            page.screenshot(path=str(shot), full_page=True)
            _save_artifact(shot)
            # Phone width: the same page, one column, nothing wider than the screen.
            page.set_viewport_size({"width": 390, "height": 844})
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{overflow}px wider than a phone: {page.evaluate(TOO_WIDE)}"
            page.screenshot(path=str(tmp_path / "web-result-phone.png"), full_page=True)
            _save_artifact(tmp_path / "web-result-phone.png")
            assert problems == [], problems
        finally:
            browser.close()


def _poll(page: Any, script: str, done: Any, timeout_s: float = 30) -> Any:
    """Evaluate ``script`` until ``done`` likes the result. (Not wait_for_function: it evals
    a string in the page, which the page's Content-Security-Policy rightly forbids.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        value = page.evaluate(script)
        if done(value) or time.monotonic() > deadline:
            return value
        page.wait_for_timeout(100)


def _follow_progress(page: Any) -> list[float]:
    """The progress bar's values, sampled until the job ends (or the time is up)."""
    page.wait_for_selector("#job:not([hidden])")
    seen: list[float] = []
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while time.monotonic() < deadline:
        status = page.get_attribute("#job", "data-status")
        value = float(page.eval_on_selector("#progress", "p => p.value"))
        if not seen or value != seen[-1]:
            seen.append(value)
        if status in ("done", "failed", "cancelled"):
            break
        page.wait_for_timeout(150)
    return seen


def test_the_page_shows_which_field_is_wrong(chromium: Path, stack: Stack, tmp_path: Path) -> None:
    """A check the page makes itself, then one only the server can make (the file's bytes)."""
    from playwright.sync_api import expect, sync_playwright

    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("Dear customer, thank you for your order.\n" * 10)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(stack.url)
            page.get_by_label("Your API key").fill(API_KEY)
            page.get_by_role("button", name="Save key").click()
            expect(page.locator("#auth-status")).to_have_text("Key saved.")

            page.get_by_role("button", name="Make my ad").click()
            headline_error = page.locator("#headline-error")
            headline_error.wait_for()
            assert "headline" in headline_error.inner_text().lower()
            assert page.get_attribute("#headline", "aria-invalid") == "true"

            page.get_by_label("Headline").fill("Fresh roasted coffee")
            page.get_by_label("Product photos").set_input_files(str(not_a_photo))
            page.get_by_role("button", name="Make my ad").click()
            images_error = page.locator("#images-error")
            images_error.wait_for()
            assert "notes.jpg" in images_error.inner_text()
            assert "not an image" in images_error.inner_text()
            assert page.locator("#headline-error").is_hidden()
        finally:
            browser.close()


# --- Other sites, through the same browser ------------------------------------------------------

# What an attacker's page does once loaded: a multipart upload of a real photo, as a plain
# (no-cors) fetch, as a fetch that tries to add the page's header, and as a form.
ATTACK_PAGE = """<!doctype html><html><body>
<form id="f" method="post" enctype="multipart/form-data" action="{api}/v1/jobs">
  <input name="headline" value="Sent by another site"></form>
<script>
(async () => {{
  const bytes = Uint8Array.from(atob("{jpeg}"), (c) => c.charCodeAt(0));
  const body = () => {{
    const fd = new FormData();
    fd.append("headline", "Sent by another site");
    fd.append("images", new Blob([bytes], {{type: "image/jpeg"}}), "p.jpg");
    return fd;
  }};
  const results = [];
  for (const options of [
    {{method: "POST", body: body(), mode: "no-cors"}},
    {{method: "POST", body: body(), headers: {{"X-Castwork-CSRF": "1"}}}},
  ]) {{
    try {{ await fetch("{api}/v1/jobs", options); results.push("sent"); }}
    catch (err) {{ results.push("blocked"); }}
  }}
  document.title = results.join(",");
  document.getElementById("f").submit();
}})();
</script></body></html>"""


@contextmanager
def _attacker_site(html: str) -> Iterator[int]:
    """A page of another site, served on a free loopback port; yields the port."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, name="attacker", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _post_statuses(page: Any) -> list[int]:
    """The statuses of the POSTs ``page`` makes from now on (filled in as they answer)."""
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.request.method == "POST" else None)
    return statuses


def _jpeg_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


# evil.test resolves to this machine: what DNS rebinding makes of the attacker's own name.
REBINDING_FLAGS = [
    *CHROMIUM_FLAGS,
    "--host-resolver-rules=MAP evil.test 127.0.0.1",
    "--no-proxy-server",
]


@pytest.mark.reliability("input", "a keyless API and pages of other sites in a real browser")
def test_other_sites_cannot_reach_a_keyless_api_from_the_browser(
    chromium: Path, keyless: Stack
) -> None:
    from playwright.sync_api import sync_playwright

    api_port = keyless.url.rsplit(":", 1)[1]
    attack = ATTACK_PAGE.format(api=keyless.url, jpeg=_jpeg_b64())
    with sync_playwright() as pw, _attacker_site(attack) as site_port:
        browser = pw.chromium.launch(executable_path=str(chromium), args=REBINDING_FLAGS)
        try:
            page = browser.new_page()
            # DNS rebinding: the attacker's name, now pointing here, is not served.
            rebound = page.goto(f"http://evil.test:{api_port}/v1/jobs")
            assert rebound is not None and rebound.status == 400, rebound and rebound.text()
            assert "untrusted_host" in rebound.text()
            page.close()

            # Uploads from another site (Origin http://evil.test:...), and from another page
            # on this machine (a loopback Origin: only the missing header stops that one).
            for origin, code in [
                (f"http://evil.test:{site_port}", "cross_origin"),
                (f"http://localhost:{site_port}", "csrf"),
            ]:
                page = browser.new_page()
                posts = _post_statuses(page)
                with page.expect_navigation(url=f"{keyless.url}/v1/jobs"):
                    page.goto(origin)  # its script uploads, then submits the form
                page.wait_for_load_state()
                # The plain fetch and the form reached the API and were refused; the fetch
                # with the page's header never left the browser (its preflight failed).
                assert posts and all(status == 403 for status in posts), (origin, posts)
                assert code in page.content(), (origin, page.content()[:500])
                page.close()
            assert keyless.store.list("local") == [], "another site made a job"
        finally:
            browser.close()


def test_the_keyless_page_still_submits_its_form(
    chromium: Path, keyless: Stack, photos: list[Path]
) -> None:
    """The page sends the CSRF header itself: without keys its form makes a job."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.goto(keyless.url)
            page.wait_for_selector("#template option[value='sale']", state="attached")
            assert page.locator("#auth[open]").count() == 0  # no key asked for
            page.get_by_label("Headline").fill("Fresh roasted coffee")
            page.get_by_label("Product photos").set_input_files([str(p) for p in photos])
            page.get_by_role("button", name="Make my ad").click()
            page.wait_for_selector("#job:not([hidden])")
            assert page.get_attribute("#job", "data-status") == "queued"
            (job,) = keyless.store.list("local")
            assert job.fields["headline"] == "Fresh roasted coffee"
            assert problems == [], problems
        finally:
            browser.close()
