"""Must-show: a job submitted through the HTTP API with real photos ends in three valid MP4s
and thumbnails, and a frame of each shows the headline, price and call to action in the
boxes the template puts them in (read back with OCR)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from media import ffmpeg
from media.templates import FRAME_SIZES, get_template
from tests.ad_helpers import ocr, photo_bytes, worker_env, worker_process
from workers.api import create_app
from workers.broker import make_broker
from workers.settings import load_settings
from workers.store import JobStore

pytestmark = pytest.mark.models

FIELDS = {
    "template": "showcase",
    "headline": "Handmade ceramic mugs",
    "description": (
        "Every mug is thrown on the wheel and glazed by hand in our small studio by the sea, "
        "so no two are ever quite alike"
    ),
    "price": "$24",
    "cta": "Shop now",
    "store": "Clay and Co",
}


def _logo() -> bytes:
    im = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    from PIL import ImageDraw

    ImageDraw.Draw(im).ellipse((20, 20, 380, 180), fill=(240, 200, 90, 255))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_api_job_to_three_checked_mp4s(redis_url: str, tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs"
    settings = load_settings(broker={"url": redis_url}, jobs={"dir": jobs_dir})
    app = create_app(settings, store=JobStore.from_url(redis_url), broker=make_broker(settings))
    client = TestClient(app, base_url="http://127.0.0.1", headers={"X-Castwork-CSRF": "1"})
    files = [
        ("images", (f"{n}.jpg", photo_bytes(n), "image/jpeg"))
        for n in ("coffee", "chelsea", "rocket")
    ]
    files.append(("logo", ("logo.png", _logo(), "image/png")))
    with worker_process(worker_env(redis_url, jobs_dir), threads=2):
        resp = client.post(
            "/v1/jobs", data=FIELDS, files=files, headers={"Idempotency-Key": "e2e-1"}
        )
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        deadline = time.monotonic() + 300
        seen_percents = []
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            seen_percents.append(job["percent"])
            if job["status"] in {"done", "failed"}:
                break
            time.sleep(0.5)
    assert job["status"] == "done", job
    assert any(0 < p < 100 for p in seen_percents)  # progress was visible while it ran
    assert seen_percents == sorted(seen_percents)  # and never went backwards

    manifest_dir = jobs_dir / "local" / job_id / "out"
    narration = (jobs_dir / "local" / job_id / "work" / "narration.json").read_text()
    import json

    spoken = json.loads(narration)["duration_s"]
    template = get_template("showcase")
    expected = template.timing.lead_in_s + spoken + template.timing.tail_s
    names = {f["name"] for f in job["files"]} if "files" in job else set()
    for aspect in ("9:16", "1:1", "16:9"):
        slug = aspect.replace(":", "x")
        video = tmp_path / f"{slug}.mp4"
        got = client.get(f"/v1/jobs/{job_id}/files/{slug}.mp4")
        assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
        video.write_bytes(got.content)
        thumb = client.get(f"/v1/jobs/{job_id}/files/thumb-{slug}.jpg")
        assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
        probe = ffmpeg.probe(video)
        assert (probe.width, probe.height) == FRAME_SIZES[aspect]  # type: ignore[index]
        assert probe.fps == pytest.approx(30.0)
        assert probe.video_codec == "h264" and probe.audio_codec == "aac"
        # The narration decides the length: lead-in + speech + tail, to the frame.
        assert probe.duration == pytest.approx(expected, abs=0.1)
        # The end card: headline, price and call to action, each in its template box.
        frame_path = tmp_path / f"{slug}.png"
        ffmpeg.frame(video, frame_path, at_s=probe.duration - 0.2)
        frame = Image.open(frame_path).convert("RGB")
        layout = template.layouts[aspect].end_card  # type: ignore[index]
        for field, must in (("headline", "CERAMIC MUGS"), ("price", "24"), ("cta", "SHOP NOW")):
            x, y, w, h = layout[field].pixels(*FRAME_SIZES[aspect])  # type: ignore[index]
            read = ocr(frame.crop((x, y, x + w, y + h)))
            assert must in read, f"{aspect} {field}: OCR read {read!r}"
    assert (manifest_dir / "preview.mp4").exists()
    assert names == set() or {"9x16.mp4", "1x1.mp4", "16x9.mp4"} <= names
