"""Must-show: a job submitted through the HTTP API with real photos ends in three valid MP4s
and thumbnails, and a frame of each shows the headline, price and call to action in the
boxes the template puts them in (read back with OCR).

It runs the way a farm does (issue 20): the API with one data directory, two `castwork worker`
processes with data directories of their own, nothing shared but Redis and an S3 store (a
real SeaweedFS started here): every stage runs in a worker, the files are served back by the
API from the store (whole and by byte range), no job file is left on any machine's disk, the
job's webhook arrives signed (verified with the Standard Webhooks library), and retention works
in the bucket. The local-disk path is the page test's (tests/test_web.py)."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from standardwebhooks.webhooks import Webhook

from media import ffmpeg
from media.templates import FRAME_SIZES, get_template
from tests.ad_helpers import (
    latin_house_font,
    lit_pixels,
    made_track,
    ocr,
    photo_bytes,
    spoken_words,
    wait_for,
    worker_env,
    worker_process,
)
from tests.test_webhooks import Receiver
from workers.api import create_app
from workers.broker import make_broker
from workers.retention import Reaper, plan
from workers.settings import load_settings
from workers.storage import open_storage
from workers.storage.s3 import S3Storage
from workers.storage.seaweed import SeaweedFS, running_seaweedfs
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
KEY = "farm-merchant-key-0123"
BUCKET_URL = "s3://castwork/e2e"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def _logo() -> bytes:
    im = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    from PIL import ImageDraw

    ImageDraw.Draw(im).ellipse((20, 20, 380, 180), fill=(240, 200, 90, 255))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_api_job_to_three_checked_mp4s_rendered_by_a_farm(
    redis_url: str, s3: SeaweedFS, tmp_path: Path
) -> None:
    api_dir, worker_dirs = tmp_path / "api", [tmp_path / "w1", tmp_path / "w2"]
    settings = load_settings(
        broker={"url": redis_url},
        jobs={"dir": api_dir},
        storage=s3.settings(BUCKET_URL),
        api={"keys": {"farm": KEY}},
        webhooks={"allow_private": True},  # the receiver below is on loopback
    )
    receiver = Receiver([])
    store = JobStore.from_url(redis_url)
    storage = open_storage(settings)
    app = create_app(settings, store=store, broker=make_broker(settings))
    client = TestClient(
        app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {KEY}"}
    )
    files = [
        ("images", (f"{n}.jpg", photo_bytes(n), "image/jpeg"))
        for n in ("coffee", "chelsea", "rocket")
    ]
    files.append(("logo", ("logo.png", _logo(), "image/png")))
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    hooks = {"CASTWORK_WEBHOOKS__ALLOW_PRIVATE": "true", **s3.env(BUCKET_URL)}
    env = [
        worker_env(redis_url, d, **hooks, CASTWORK_MEDIA__QUALITY_REPORT="true")
        for d in worker_dirs
    ]
    with (
        worker_process(env[0], threads=1, log=logs[0]),
        worker_process(env[1], threads=1, log=logs[1]),
    ):
        # A brand kit with a font and a music track: kept by the API, copied into the job,
        # read by whichever worker runs each stage (the object store carries them).
        for part, name, data in [
            ("font", "Clay Sans.otf", latin_house_font()),
            ("music_track", "jingle.mp3", made_track(tmp_path / "j.mp3", 5.0).read_bytes()),
        ]:
            kept = client.put(f"/v1/brand/{part}", files={"file": (name, data, "audio/mpeg")})
            assert kept.status_code == 200, kept.text
        resp = client.post(
            "/v1/jobs",
            data={**FIELDS, "webhook_url": receiver.url},
            files=files,
            headers={"Idempotency-Key": "e2e-1"},
        )
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]
        # Kept in the store before the job was queued: a worker anywhere finds it.
        assert storage.has("farm", job_id, "work/request.json")
        seen_percents: list[float] = []
        job: dict[str, object] = {}

        def finished() -> bool:
            job.update(client.get(f"/v1/jobs/{job_id}").json())
            seen_percents.append(float(job["percent"]))  # type: ignore[arg-type]
            return job["status"] in {"done", "failed"}

        try:
            wait_for(finished, 300, "the job to finish", every_s=0.5)
            # Announced by a worker (the outbox relay, then the webhook actor).
            wait_for(lambda: receiver.got, 30, "the webhook")
        except AssertionError:
            raise AssertionError("\n".join(p.read_text()[-3000:] for p in logs)) from None
        receiver.close()
    assert job["status"] == "done", job
    ((headers, body),) = receiver.got
    secret = client.get("/v1/webhooks/secret").json()["secret"]
    event = Webhook(secret).verify(body, headers)  # signed with the merchant's secret
    assert (event["type"], event["data"]["id"]) == ("job.done", job_id)
    delivered = client.get(f"/v1/jobs/{job_id}").json()["webhook"]["deliveries"]
    assert [(d["event"], d["ok"]) for d in delivered] == [("done", True)]
    # Each output's quality report, in the view and in the webhook: nothing flagged, hard
    # checks measured on the real files (loudness of the AAC mix, frames, captions).
    quality = job["quality"]
    assert quality == event["data"]["quality"] and quality["flagged"] is False, quality  # type: ignore[index]
    assert set(quality["outputs"]) == {"9:16", "1:1", "16:9"}  # type: ignore[index]
    for aspect, checks in quality["outputs"].items():  # type: ignore[index]
        status = {c["name"]: c["status"] for c in checks}
        for name in ("loudness", "true_peak", "black_frames", "frozen_frames", "captions"):
            assert status[name] == "pass", (aspect, checks)
        assert status["text"] in {"pass", "warn"}, (aspect, checks)  # OCR: soft
    assert job["copy"]["source"] == "merchant"  # type: ignore[index]
    brand = {"font": True, "font_used": True, "font_note": None, "music_track": True}
    assert job["brand"] == brand, job["brand"]
    assert any(0 < p < 100 for p in seen_percents)  # progress was visible while it ran
    assert seen_percents == sorted(seen_percents)  # and never went backwards

    record = store.get(job_id)
    # Every stage ran in a worker process, none here (the formats spread over both workers
    # when both were free: recorded, not required).
    assert set(record.ran) == {"narrate", "finalize"} | {f"render {a}" for a in record.formats}
    assert all(not where.endswith(f":{os.getpid()}") for where in record.ran.values())
    assert record.manifest is not None
    spoken = record.manifest.narration.duration_s
    template = get_template("showcase")
    expected = template.timing.lead_in_s + spoken + template.timing.tail_s
    outputs = {item["format"]: item for item in job["outputs"]}  # type: ignore[union-attr]
    for aspect in ("9:16", "1:1", "16:9"):
        slug = aspect.replace(":", "x")
        video = tmp_path / f"{slug}.mp4"
        got = client.get(f"/v1/jobs/{job_id}/files/{slug}.mp4")
        assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
        assert int(got.headers["content-length"]) == outputs[aspect]["bytes"] == len(got.content)
        video.write_bytes(got.content)
        part = client.get(f"/v1/jobs/{job_id}/files/{slug}.mp4", headers={"Range": "bytes=0-1023"})
        assert part.status_code == 206 and part.content == got.content[:1024]
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
            read = ocr(frame.crop((x, y, x + w, y + h)), until=must)
            assert must in read, f"{aspect} {field}: OCR read {read!r}"
    # Karaoke captions (the template's style): at a word's time, the lit word in the caption
    # box is that word (OCR of the highlight-coloured pixels only).
    captions = job["captions"]
    assert captions["style"] == "karaoke"  # type: ignore[index]
    checked = 0
    for word, lit_until in spoken_words(captions["items"]):  # type: ignore[index]
        if len(word["text"]) < 5 or lit_until - word["start"] < 0.25 or checked == 2:
            continue
        frame_path = tmp_path / f"word-{checked}.png"
        ffmpeg.frame(tmp_path / "9x16.mp4", frame_path, at_s=(word["start"] + lit_until) / 2)
        x, y, w, h = template.layouts["9:16"].scene["captions"].pixels(*FRAME_SIZES["9:16"])
        lit = lit_pixels(Image.open(frame_path).convert("RGB").crop((x, y, x + w, y + h)))
        assert lit is not None, f"no word lit at {word}"
        expected_word = word["text"].strip(".,!?").upper()
        assert expected_word in ocr(lit, until=expected_word), word
        checked += 1
    assert checked == 2
    assert client.get(str(job["preview_url"])).status_code == 200
    # No job folder on any machine's disk: only (empty) scratch space.
    for d in (api_dir, *worker_dirs):
        left = [p for p in d.rglob("*") if p.is_file()] if d.exists() else []
        assert left == [], left

    # Retention in the bucket (this merchant's jobs only: the Redis is shared by the tests):
    # a done job's uploads go; an expired job goes whole, record and files.
    reaper = Reaper(settings, store, storage=storage)
    now = time.time()
    assert reaper.carry_out(plan(reaper.snapshot("farm"), reaper.policy, now)).uploads_dropped
    assert storage.folders("farm")[job_id].upload_bytes == 0
    later = plan(reaper.snapshot("farm"), reaper.policy, now + 400 * 86_400)
    assert reaper.carry_out(later).deleted == {"expired": 1}
    assert job_id not in storage.folders("farm") and store.status(job_id) is None
    # Sockets closed now, not whenever the collector runs (a warning there is an error).
    client.close()
    store.r.close()
    if isinstance(storage, S3Storage):
        storage.close()
