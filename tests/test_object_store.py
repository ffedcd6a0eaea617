"""Ad jobs on shared object storage, against a real S3 server (SeaweedFS, started here).

The store on its own: a stage's scratch copy, what it keeps and what it does not, downloads
whole and by range, presigned links, retention's listing and deletes, refusals and outages as
errors that say whether a retry helps, and the doctor's check. The whole path (an API job
rendered by workers with other data directories through the store) is the must-show test,
tests/test_ad_api_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from media.errors import StorageError
from workers.settings import StorageSettings, load_settings
from workers.storage.s3 import S3Storage, StoreRefused, StoreUnavailable
from workers.storage.seaweed import SeaweedFS, running_seaweedfs

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), buckets=("castwork",)) as s:
        yield s


@pytest.fixture
def storage(s3: SeaweedFS, tmp_path: Path, request: pytest.FixtureRequest) -> S3Storage:
    # A prefix per test: tests share the bucket, never each other's files.
    return S3Storage(s3.settings(f"s3://castwork/{request.node.name[:40]}"), tmp_path / "jobs")


def test_a_stage_works_on_a_scratch_copy_and_keeps_what_it_wrote(storage: S3Storage) -> None:
    with storage.workspace("acme", "00aa", pull=()) as ws:
        (ws.paths.uploads / "00-photo.jpg").write_bytes(b"photo")
        ws.paths.request_file.write_text("{}")
        root = ws.paths.root
        assert root.parent == storage.scratch
    assert not root.exists()  # the scratch copy is gone once the stage ends
    assert storage.has("acme", "00aa", "uploads/00-photo.jpg")

    with storage.workspace("acme", "00aa", pull=("uploads", "work")) as ws:
        assert (ws.paths.uploads / "00-photo.jpg").read_bytes() == b"photo"
        layers = ws.paths.work / "layers"
        layers.mkdir()
        (layers / "title.png").write_bytes(b"png")  # the stage's own cache: not kept
        (ws.paths.out / ".ad.1234.part.mp4").write_bytes(b"half")  # a write in progress
        (ws.paths.out / "ad-1x1-abc.mp4").write_bytes(b"video")
        assert not ws.fetch(ws.paths.out / "ad-9x16-abc.mp4")  # not rendered yet
    names = {name for name, _ in storage.objects("acme", "00aa")}
    assert names == {"uploads/00-photo.jpg", "work/request.json", "out/ad-1x1-abc.mp4"}

    with storage.workspace("acme", "00aa", pull=()) as ws:
        assert ws.fetch(ws.paths.out / "ad-1x1-abc.mp4")  # a redelivered render finds it
        assert (ws.paths.out / "ad-1x1-abc.mp4").read_bytes() == b"video"


def test_a_stage_that_fails_keeps_nothing(storage: S3Storage) -> None:
    with pytest.raises(RuntimeError), storage.workspace("acme", "00bb") as ws:
        (ws.paths.out / "manifest.json").write_text("{}")
        root = ws.paths.root
        raise RuntimeError("ffmpeg died")
    assert not root.exists()
    assert not storage.has("acme", "00bb", "out/manifest.json")


def test_downloads_whole_by_range_and_by_presigned_link(s3: SeaweedFS, tmp_path: Path) -> None:
    data = bytes(range(256)) * 400  # 102400 bytes
    streamed = S3Storage(s3.settings("s3://castwork/dl"), tmp_path)
    with streamed.workspace("acme", "00cc") as ws:
        (ws.paths.out / "ad.mp4").write_bytes(data)
    whole = streamed.download("acme", "00cc", "out/ad.mp4")
    assert whole is not None and not isinstance(whole, Path)
    assert b"".join(whole.chunks) == data and whole.length == whole.size == len(data)  # type: ignore[union-attr]
    part = streamed.download("acme", "00cc", "out/ad.mp4", "bytes=100-199")
    assert b"".join(part.chunks) == data[100:200]  # type: ignore[union-attr]
    assert part.content_range == f"bytes 100-199/{len(data)}"  # type: ignore[union-attr]
    tail = streamed.download("acme", "00cc", "out/ad.mp4", "bytes=-10")
    assert b"".join(tail.chunks) == data[-10:]  # type: ignore[union-attr]
    # Past the end, or several ranges: the whole file, as a server may answer.
    for asked in ("bytes=999999-", "bytes=0-1,5-6"):
        got = streamed.download("acme", "00cc", "out/ad.mp4", asked)
        assert got.content_range is None and b"".join(got.chunks) == data  # type: ignore[union-attr]
    assert streamed.download("acme", "00cc", "out/none.mp4") is None

    presigned = S3Storage(s3.settings("s3://castwork/dl", downloads="redirect"), tmp_path)
    link = presigned.download("acme", "00cc", "out/ad.mp4")
    assert link is not None and link.url.startswith(s3.endpoint_url)  # type: ignore[union-attr]
    assert httpx.get(link.url).content == data  # type: ignore[union-attr]
    assert presigned.download("acme", "00cc", "out/none.mp4") is None


def test_retention_lists_and_deletes_in_the_store(storage: S3Storage) -> None:
    for job_id, size in (("00dd", 1000), ("00ee", 10)):
        with storage.workspace("acme", job_id) as ws:
            (ws.paths.uploads / "00-p.jpg").write_bytes(b"u" * size)
            (ws.paths.out / "ad.mp4").write_bytes(b"v" * 5)
    with storage.workspace("other", "00ff") as ws:
        ws.paths.spec_file.write_text("{}")
    assert {"acme", "other"} <= storage.merchants()
    folders = storage.folders("acme")
    assert folders["00dd"].bytes == 1005 and folders["00dd"].upload_bytes == 1000
    assert not folders["00dd"].inputs_ready and storage.folders("other")["00ff"].inputs_ready
    assert abs(folders["00dd"].modified - time.time()) < 120
    assert storage.merchant_bytes("acme") == 1020
    storage.remove("acme", "00dd", "uploads")
    assert storage.folders("acme")["00dd"].bytes == 5
    storage.remove("acme", "00dd")
    storage.remove("acme", "00dd")  # gone already: no error
    assert set(storage.folders("acme")) == {"00ee"}


def test_refusals_and_outages_say_whether_a_retry_helps(s3: SeaweedFS, tmp_path: Path) -> None:
    wrong_key = S3Storage(s3.settings("s3://castwork/x", secret_key="not-the-secret-key"), tmp_path)
    with pytest.raises(StoreRefused) as refused:
        wrong_key.check()
    assert not refused.value.transient and s3.secret_key not in str(refused.value)
    with pytest.raises(StoreRefused):
        S3Storage(s3.settings("s3://no-such-bucket"), tmp_path).check()
    settings = StorageSettings(
        url="s3://castwork", endpoint_url="http://127.0.0.1:9", access_key="a", secret_key="b"
    )
    down = S3Storage(settings, tmp_path)
    with pytest.raises(StoreUnavailable) as unavailable, down.workspace("acme", "0011") as ws:
        ws.paths.request_file.write_text("{}")
    assert unavailable.value.transient and isinstance(unavailable.value, StorageError)
    assert not list((tmp_path / ".scratch").iterdir())  # no scratch copy left behind


def test_storage_settings_are_checked() -> None:
    for bad in ("s3:/bucket", "http://bucket", "s3://Bad_Bucket", "s3://b/../x"):
        with pytest.raises(ValueError):
            StorageSettings(url=bad)
    with pytest.raises(ValueError, match="go together"):
        StorageSettings(url="s3://bucket", access_key="a")
    s = StorageSettings(url="s3://my-bucket/ads/jobs/")
    assert (s.bucket, s.prefix) == ("my-bucket", "ads/jobs")


def test_doctor_checks_the_store(s3: SeaweedFS, tmp_path: Path) -> None:
    from castwork.doctor import run_checks

    settings = load_settings(jobs={"dir": tmp_path}, storage=s3.settings("s3://castwork/dr"))
    [ok] = run_checks(settings, only={"storage"})
    assert ok.ok and "wrote, read and deleted" in ok.smoke, ok
    wrong = settings.storage.model_copy(update={"url": "s3://no-such-bucket"})
    [bad] = run_checks(settings.model_copy(update={"storage": wrong}), only={"storage"})
    assert not bad.ok and "StoreRefused" in bad.smoke, bad
