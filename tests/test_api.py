"""The merchant HTTP API over a real Redis and dramatiq's StubBroker (enqueued, never run).

What a merchant's client relies on: 201 and a job it can follow, Idempotency-Key replays,
errors that name the field or the file, size limits that hold without reading a huge body,
keys that keep merchants apart (another's job is a plain 404), files served only by the
names a finished job lists, and a schema that says all of it.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient
from PIL import Image
from starlette.types import Message

from base.errors import ConfigError
from workers.actors import NARRATE, QUEUE
from workers.api import CSRF_HEADER, create_app, keys_required
from workers.settings import Settings, load_settings
from workers.storage.local import job_root
from workers.store import JobStore

if TYPE_CHECKING:
    # What starlette's TestClient returns (it prefers httpx2 to httpx).
    from httpx2 import Response

KEY_A, KEY_B = "key-for-alice-0123456789", "key-for-bob-9876543210"
# Where a client on this machine reaches the API (a keyless API answers loopback names only),
# and the header the page sends so that no other site's form can pass for it.
LOCAL = "http://127.0.0.1:8000"
PAGE_HEADERS = {CSRF_HEADER: "1"}
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"X-API-Key": KEY_B}

pytestmark = pytest.mark.redis
# A URL the page would load from another site (an SVG's xmlns is a name, not a load).
EXTERNAL = re.compile(r"""(src|href|url|fetch)\s*[=(]\s*["']?(https?:)?//""")


def _jpeg(color: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


PHOTO = _jpeg()
FIELDS = {"headline": "Fresh coffee", "price": "$9", "cta": "Order now", "formats": "1:1"}


def _photos(n: int = 1, data: bytes = PHOTO) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (f"photo{i}.jpg", data, "image/jpeg")) for i in range(n)]


class Api:
    """One app over the shared Redis, with its own key prefix so tests never meet."""

    def __init__(self, settings: Settings, store: JobStore, broker: StubBroker) -> None:
        self.settings, self.store, self.broker = settings, store, broker
        app = create_app(settings, store=store, broker=broker)
        self.client = TestClient(app, base_url=LOCAL, headers=PAGE_HEADERS)

    def submit(
        self,
        headers: dict[str, str] | None = None,
        fields: dict[str, Any] | None = None,
        files: list[tuple[str, tuple[str, bytes, str]]] | None = None,
    ) -> Response:
        return self.client.post(
            "/v1/jobs",
            data=FIELDS if fields is None else fields,
            files=_photos() if files is None else files,
            headers=headers or {},
        )

    def enqueued(self) -> list[dramatiq.Message[Any]]:
        queue = self.broker.queues[QUEUE]
        return [dramatiq.Message.decode(raw) for raw in list(queue.queue)]

    def finish(self, job_id: str, merchant: str) -> dict[str, bytes]:
        """Make the job done as finalize would: files in out/, a manifest in the record."""
        out = job_root(self.settings, merchant, job_id).out
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "1x1-0123abcd.mp4": b"\x00\x00\x00\x18ftypmp42" + b"v" * 5000,
            "thumb-1x1.jpg": _jpeg("blue"),
            "preview.mp4": b"\x00\x00\x00\x18ftypmp42" + b"p" * 100,
            "manifest.json": b"{}",
        }
        for name, data in files.items():
            (out / name).write_bytes(data)
        # A file beside the job folder that no request may reach.
        (out.parent.parent / "secret.txt").write_text("not yours")
        manifest = {
            "template": "showcase",
            "duration_s": 9.5,
            "outputs": [
                {
                    "format": "1:1",
                    "video": "1x1-0123abcd.mp4",
                    "thumbnail": "thumb-1x1.jpg",
                    "width": 1080,
                    "height": 1080,
                    "fps": 30.0,
                    "duration_s": 9.5,
                    "bytes": len(files["1x1-0123abcd.mp4"]),
                }
            ],
            "preview": "preview.mp4",
        }
        assert self.store.finish(job_id, manifest)
        return files


MakeApi = Callable[..., Api]


@pytest.fixture
def make_api(redis_url: str, tmp_path: Path) -> Iterator[MakeApi]:
    made: list[Api] = []

    def make(**overrides: Any) -> Api:
        settings = load_settings(data_dir=tmp_path, **overrides)
        store = JobStore.from_url(redis_url)
        store.prefix = f"test-{uuid.uuid4().hex[:12]}"
        api = Api(settings, store, StubBroker())
        made.append(api)
        return api

    yield make
    for api in made:
        api.client.close()
        api.store.r.close()


@pytest.fixture
def api(make_api: MakeApi) -> Api:
    return make_api(api={"keys": {"alice": KEY_A, "bob": KEY_B}})


# --- Submitting -----------------------------------------------------------------------------


def test_submit_returns_201_and_the_job_is_visible(api: Api) -> None:
    r = api.submit(AUTH_A, files=_photos(2))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["formats"] == ["1:1"]
    assert job["fields"]["headline"] == "Fresh coffee" and job["outputs"] == []

    got = api.client.get(f"/v1/jobs/{job['id']}", headers=AUTH_A).json()
    assert got["id"] == job["id"] and got["percent"] == 0.0
    listed = api.client.get("/v1/jobs", headers=AUTH_A).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]

    (message,) = api.enqueued()
    assert message.actor_name == NARRATE and list(message.args) == [job["id"]]
    uploads = job_root(api.settings, "alice", job["id"]).uploads
    assert sorted(p.name for p in uploads.iterdir()) == ["00-photo0.jpg", "01-photo1.jpg"]


def test_formats_as_repeated_fields_and_options(api: Api) -> None:
    fields = {**FIELDS, "formats": ["16:9", "9:16"], "captions": "false", "language": "en"}
    r = api.submit(AUTH_A, fields=fields)
    assert r.status_code == 201, r.text
    assert r.json()["formats"] == ["9:16", "16:9"]  # canonical order


def test_list_is_newest_first_with_limit_and_offset(api: Api) -> None:
    ids = [
        api.submit(AUTH_A, fields={**FIELDS, "headline": f"Ad {i}"}).json()["id"] for i in range(3)
    ]
    page = api.client.get("/v1/jobs?limit=2", headers=AUTH_A).json()
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]
    rest = api.client.get("/v1/jobs?limit=2&offset=2", headers=AUTH_A).json()
    assert [j["id"] for j in rest["jobs"]] == [ids[0]]
    bad = api.client.get("/v1/jobs?limit=0", headers=AUTH_A)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "limit"


def test_idempotency_key_replays_the_same_job(api: Api) -> None:
    headers = {**AUTH_A, "Idempotency-Key": "order-42"}
    first = api.submit(headers)
    again = api.submit(headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(api.enqueued()) == 1
    assert len(api.client.get("/v1/jobs", headers=AUTH_A).json()["jobs"]) == 1

    different = api.submit(headers, fields={**FIELDS, "headline": "Another ad"})
    assert different.status_code == 422
    error = different.json()["error"]
    assert error["code"] == "idempotency_conflict" and error["field"] == "Idempotency-Key"
    assert "order-42" in error["message"] and "different request" in error["message"]
    # The same key from another merchant is that merchant's own.
    assert api.submit({**AUTH_B, "Idempotency-Key": "order-42"}).status_code == 201


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"price": "1"}, "headline", "headline: Field required"),
        ({**FIELDS, "headline": "x" * 81}, "headline", "headline: String should have at most 80"),
        ({**FIELDS, "headline": "   "}, "headline", "headline"),
        ({**FIELDS, "formats": "4:3"}, "formats", "formats.0: Input should be"),
        ({**FIELDS, "language": "fr"}, "language", "language: Input should be 'auto'"),
        ({**FIELDS, "captions": "maybe"}, "captions", "captions: Input should be a valid boolean"),
        ({**FIELDS, "template": "nope"}, "template", "template: unknown template 'nope'"),
        ({**FIELDS, "cta": "c" * 41}, "cta", "cta: String should have at most 40"),
    ],
)
def test_bad_fields_are_422_naming_the_field(
    api: Api, fields: dict[str, Any], field: str, words: str
) -> None:
    r = api.submit(AUTH_A, fields=fields)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field and error["code"] == "bad_input"
    assert error["message"].startswith(words), error["message"]
    assert api.enqueued() == [] and api.client.get("/v1/jobs", headers=AUTH_A).json()["jobs"] == []


def test_missing_photos_name_the_field(api: Api) -> None:
    r = api.client.post("/v1/jobs", data=FIELDS, headers=AUTH_A)
    assert r.status_code == 422 and r.json()["error"]["field"] == "images"


def test_a_text_file_named_jpg_is_refused(api: Api) -> None:
    files = [*_photos(1), ("images", ("notes.jpg", b"Dear customer,\n" * 20, "image/jpeg"))]
    r = api.submit(AUTH_A, files=files)
    assert r.status_code == 415
    error = r.json()["error"]
    assert error["field"] == "images" and "images[1] (notes.jpg): not an image" in error["message"]

    logo = [*_photos(1), ("logo", ("logo.png", b"<svg xmlns=...>", "image/png"))]
    r = api.submit(AUTH_A, files=logo)
    assert r.status_code == 415 and r.json()["error"]["field"] == "logo"
    assert api.enqueued() == []


def test_too_many_images(make_api: MakeApi) -> None:
    api = make_api(media={"max_images": 2})
    r = api.submit(files=_photos(3))
    assert r.status_code == 422
    assert r.json()["error"] == {
        "code": "bad_input",
        "message": "images: 3 photos; at most 2",
        "field": "images",
    }
    assert api.submit(files=_photos(2)).status_code == 201


def test_oversize_file_is_413_naming_it(make_api: MakeApi) -> None:
    api = make_api(api={"max_request_mb": 3}, media={"max_image_mb": 1})
    big = PHOTO + b"\x00" * (1 << 20)  # a JPEG's magic bytes, just over 1 MB
    r = api.submit(files=[("images", ("huge.jpg", big, "image/jpeg"))])
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "file_too_large" and "images[0] (huge.jpg)" in error["message"]
    assert "1 MB" in error["message"]


def test_oversize_request_is_413_by_content_length(make_api: MakeApi) -> None:
    api = make_api(api={"max_request_mb": 1})
    r = api.submit(files=_photos(1, PHOTO + b"\x00" * (2 << 20)))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


_LOCAL_HEADERS = [(b"host", b"127.0.0.1:8000"), (CSRF_HEADER.lower().encode(), b"1")]


async def asgi_call(
    api: Api,
    method: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    *,
    local: bool = True,
) -> tuple[int, bytes, int]:
    """One request to /v1/jobs straight into the ASGI app: headers exactly as given (after a
    local client's Host and the page's CSRF header, unless not ``local``; no client fixes
    them up, no Content-Length added), the body in ``chunks``, and any exception escapes to
    the test instead of becoming a quiet 500. Returns the status, the body and how many
    chunks the app pulled."""
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        if pulled == len(chunks):
            return {"type": "http.disconnect"}
        pulled += 1
        return {
            "type": "http.request",
            "body": chunks[pulled - 1],
            "more_body": pulled < len(chunks),
        }

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/v1/jobs",
        "raw_path": b"/v1/jobs",
        "root_path": "",
        "query_string": b"",
        "headers": [*_LOCAL_HEADERS, *headers] if local else headers,
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    await api.client.app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, pulled


async def _post_chunks(
    api: Api, chunks: list[bytes], headers: dict[str, str]
) -> tuple[int, dict[str, Any], int]:
    """POST chunk by chunk with no Content-Length: the status, the JSON body, chunks pulled."""
    wire = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    status, body, pulled = await asgi_call(api, "POST", wire, chunks)
    return status, json.loads(body), pulled


def _multipart_chunks(boundary: str, n: int, size: int = 65536) -> list[bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="headline"\r\n\r\nHi\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
        f'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    return [head, *[b"\xff" * size for _ in range(n)], f"\r\n--{boundary}--\r\n".encode()]


async def test_oversize_request_is_413_while_streaming(make_api: MakeApi) -> None:
    """No Content-Length (chunked): the body is counted as it arrives and cut off at 1 MB."""
    api = make_api(api={"max_request_mb": 1})
    chunks = _multipart_chunks("b0undary", 64)  # 64 x 64 KB: four times the limit
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    status, body, pulled = await _post_chunks(api, chunks, headers)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert pulled <= 18  # the head and 16 chunks make 1 MB: nothing past the first chunk over
    assert api.enqueued() == []


async def test_an_upload_without_a_key_is_refused_before_its_body_is_read(api: Api) -> None:
    chunks = _multipart_chunks("b0undary", 16)
    headers = {"Content-Type": "multipart/form-data; boundary=b0undary"}
    status, body, pulled = await _post_chunks(api, chunks, headers)
    assert (status, body["error"]["code"], pulled) == (401, "unauthorized", 0)
    wrong = {**headers, "Authorization": "Bearer wrong"}
    status, _, pulled = await _post_chunks(api, chunks, wrong)
    assert (status, pulled) == (401, 0)


def test_capacity_is_429_with_retry_after(make_api: MakeApi) -> None:
    api = make_api(api={"max_active_jobs": 1})
    assert api.submit().status_code == 201
    r = api.submit(fields={**FIELDS, "headline": "Second"})
    assert r.status_code == 429 and r.headers["Retry-After"].isdigit()
    assert r.json()["error"]["code"] == "capacity_exceeded"


# --- Auth ---------------------------------------------------------------------------------


def test_keys_are_required_when_configured(api: Api) -> None:
    for method, path in [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/0123456789ab"),
        ("POST", "/v1/jobs"),
    ]:
        r = api.client.request(method, path)
        assert r.status_code == 401, (method, path)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"
    wrong = api.client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]
    assert api.client.get("/v1/jobs", headers={"X-API-Key": KEY_A[:-1]}).status_code == 401
    assert api.client.get("/v1/jobs", headers={"X-API-Key": KEY_A}).status_code == 200
    assert api.client.get("/v1/jobs", headers=AUTH_A).status_code == 200


def test_merchants_never_see_each_others_jobs(api: Api) -> None:
    job_id = api.submit(AUTH_A).json()["id"]
    files = api.finish(job_id, "alice")
    missing = "0" * len(job_id)
    for method, suffix in [("GET", ""), ("POST", "/cancel"), ("GET", "/files/1x1.mp4")]:
        theirs = api.client.request(method, f"/v1/jobs/{job_id}{suffix}", headers=AUTH_B)
        nothing = api.client.request(method, f"/v1/jobs/{missing}{suffix}", headers=AUTH_B)
        assert theirs.status_code == nothing.status_code == 404, (method, suffix)
        # Word for word the same answer, but for the id the client sent.
        assert theirs.json() == _swap(nothing.json(), missing, job_id)
    assert api.client.get("/v1/jobs", headers=AUTH_B).json()["jobs"] == []
    mine = api.client.get(f"/v1/jobs/{job_id}/files/1x1.mp4", headers=AUTH_A)
    assert mine.content == files["1x1-0123abcd.mp4"]


def _swap(body: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    error = body["error"]
    return {"error": {**error, "message": error["message"].replace(old, new)}}


def test_without_keys_only_loopback_is_allowed(make_api: MakeApi, tmp_path: Path) -> None:
    api = make_api()  # api.host defaults to 127.0.0.1
    r = api.submit()
    assert r.status_code == 201
    assert job_root(api.settings, "local", r.json()["id"]).uploads.is_dir()
    assert api.client.get("/v1/config").json()["auth_required"] is False

    exposed = load_settings(data_dir=tmp_path, api={"host": "0.0.0.0"})
    assert keys_required(exposed) and not keys_required(api.settings)
    assert not keys_required(load_settings(data_dir=tmp_path, api={"host": "::1"}))
    with pytest.raises(ConfigError, match=r"api\.keys"):
        create_app(exposed, store=api.store, broker=StubBroker())


# --- Cancel, files ------------------------------------------------------------------------


def test_cancel_then_cancel_again_is_409(api: Api) -> None:
    job_id = api.submit(AUTH_A).json()["id"]
    r = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_finished"
    assert "already cancelled" in again.json()["error"]["message"]


def test_a_done_job_lists_its_files_and_serves_them(api: Api) -> None:
    job_id = api.submit(AUTH_A).json()["id"]
    files = api.finish(job_id, "alice")
    job = api.client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).json()
    assert job["status"] == "done" and job["percent"] == 100.0 and job["duration_s"] == 9.5
    (out,) = job["outputs"]
    assert out["format"] == "1:1" and out["width"] == 1080
    assert out["video_url"].startswith(f"/v1/jobs/{job_id}/files/1x1.mp4?")

    expected = [
        ("1x1.mp4", "1x1-0123abcd.mp4", "video/mp4"),
        ("thumb-1x1.jpg", "thumb-1x1.jpg", "image/jpeg"),
        ("preview.mp4", "preview.mp4", "video/mp4"),
    ]
    for public, stored, media_type in expected:
        r = api.client.get(f"/v1/jobs/{job_id}/files/{public}", headers=AUTH_A)
        assert r.status_code == 200 and r.content == files[stored]
        assert r.headers["content-type"] == media_type
    ranged = api.client.get(
        f"/v1/jobs/{job_id}/files/1x1.mp4", headers={**AUTH_A, "Range": "bytes=0-9"}
    )
    assert ranged.status_code == 206 and ranged.content == files["1x1-0123abcd.mp4"][:10]
    assert api.client.post(f"/v1/jobs/{job_id}/cancel", headers=AUTH_A).status_code == 409


def test_signed_links_work_without_a_key_and_only_as_signed(api: Api) -> None:
    job_id = api.submit(AUTH_A).json()["id"]
    files = api.finish(job_id, "alice")
    job = api.client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).json()
    video, thumb = job["outputs"][0]["video_url"], job["outputs"][0]["thumbnail_url"]
    assert api.client.get(video).content == files["1x1-0123abcd.mp4"]
    assert api.client.get(job["preview_url"]).status_code == 200

    path, _, query = video.partition("?")
    params = dict(p.split("=") for p in query.split("&"))
    tampered = [
        f"{path}?expires={params['expires']}&signature={'0' * 64}",
        f"{path}?expires={int(params['expires']) + 3600}&signature={params['signature']}",
        f"/v1/jobs/{job_id}/files/preview.mp4?{query}",  # another file, this file's signature
        f"{path}?expires=1&signature={params['signature']}",
        path,
    ]
    for url in tampered:
        r = api.client.get(url)
        assert r.status_code == 401, url
    # A link does not become another merchant's: Bob's key still gets a 404.
    assert api.client.get(thumb, headers=AUTH_B).status_code == 404


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%2F..%2Fsecret.txt",
        "..%5C..%5Csecret.txt",
        "manifest.json",
        "1x1-0123abcd.mp4",
        "%2Fetc%2Fpasswd",
        "%2E%2E",
        "9x16.mp4",
        "thumb-1x1.jpg%00.mp4",
    ],
)
def test_only_listed_file_names_are_served(api: Api, name: str) -> None:
    job_id = api.submit(AUTH_A).json()["id"]
    api.finish(job_id, "alice")
    r = api.client.get(f"/v1/jobs/{job_id}/files/{name}", headers=AUTH_A)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"


def test_files_of_an_unfinished_job_are_404(api: Api) -> None:
    job_id = api.submit(AUTH_A).json()["id"]
    r = api.client.get(f"/v1/jobs/{job_id}/files/1x1.mp4", headers=AUTH_A)
    assert r.status_code == 404


# --- Information, schema, page ------------------------------------------------------------


def test_templates_config_and_health(api: Api) -> None:
    templates = api.client.get("/v1/templates").json()["templates"]
    assert {"showcase", "sale", "news"} <= {t["id"] for t in templates}
    assert all(t["name"] for t in templates)
    config = api.client.get("/v1/config").json()
    assert config["auth_required"] is True and config["max_images"] == 8
    assert config["formats"] == ["9:16", "1:1", "16:9"]
    assert api.client.get("/healthz").json() == {"status": "ok", "redis": "ok"}


def test_unknown_routes_and_methods_use_the_error_shape(api: Api) -> None:
    r = api.client.get("/v1/nothing-here", headers=AUTH_A)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.client.delete("/v1/jobs", headers=AUTH_A)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_openapi_schema_lists_the_endpoints(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert set(paths) >= {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/files/{name}",
        "/v1/templates",
        "/v1/config",
        "/healthz",
    }
    assert {"get", "post"} <= set(paths["/v1/jobs"])
    post = paths["/v1/jobs"]["post"]
    assert post["operationId"] == "create_job"
    assert {"201", "200", "401", "413", "415", "422", "429"} <= set(post["responses"])
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Job"
    }
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert "Idempotency-Key" in {p["name"] for p in post["parameters"]}
    files = paths["/v1/jobs/{job_id}/files/{name}"]["get"]["responses"]["200"]["content"]
    assert set(files) == {"video/mp4", "image/jpeg"}
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schema["components"]["securitySchemes"])
    _assert_refs_resolve(schema, schema)


def _assert_refs_resolve(node: Any, schema: dict[str, Any]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            target: Any = schema
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]  # a KeyError here is a dangling $ref
        for value in node.values():
            _assert_refs_resolve(value, schema)
    elif isinstance(node, list):
        for value in node:
            _assert_refs_resolve(value, schema)


def test_the_page_is_served(api: Api) -> None:
    page = api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form id="job-form"' in page.text and 'src="/static/app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert not EXTERNAL.search(page.text)  # nothing from elsewhere
    for asset, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        r = api.client.get(f"/static/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert not EXTERNAL.search(r.text)
    assert api.client.get("/static/../api.py").status_code == 404


def test_the_talk_page_is_found_from_the_page_server(make_api: MakeApi) -> None:
    api = make_api(voice={"port": 8799})
    r = api.client.get("/talk", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "http://127.0.0.1:8799/talk"


def test_copy_drafts_endpoint(make_api: MakeApi) -> None:
    from media.copywriting.writer import Copywriter
    from tests.test_copywriting import GOOD, _writing

    api = make_api()
    api_client = api.client
    body = {"product": "Handmade ceramic mug", "price": "$24", "store": "Clay and Co"}
    desk = api_client.app.state.castwork.copydesk  # type: ignore[attr-defined]
    desk._writer = Copywriter([_writing(GOOD)])  # the embedded model: test_copywriting.py
    got = api_client.post("/v1/copy/drafts", json={**body, "drafts": 1})
    assert got.status_code == 200, got.text
    assert got.json()["source"] == "llm:fake-llm"
    assert got.json()["drafts"][0]["narration"] == GOOD.narration
    bad = api_client.post("/v1/copy/drafts", json={**body, "product": "  "})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "product"
    unknown = api_client.post("/v1/copy/drafts", json={**body, "template": "nope"})
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "template"
    extra = api_client.post("/v1/copy/drafts", json={**body, "claims": "best"})
    assert extra.status_code == 422

    # No copywriter configured (the default): the template's copy, and why.
    off = make_api().client.post("/v1/copy/drafts", json=body)
    assert off.status_code == 200 and off.json()["source"] == "template"
    assert off.json()["reason"] == "no copywriter model is configured"


def test_clips_are_accepted_among_the_photos_up_to_their_own_limit(
    make_api: MakeApi, tmp_path: Path
) -> None:
    from tests.test_clips import make_clip

    api = make_api(media={"max_image_mb": 1, "max_clip_mb": 2})
    clip = make_clip(tmp_path / "c.mp4", seconds=1, size="160x120").read_bytes()
    files = [*_photos(), ("images", ("c.mp4", clip, "video/mp4"))]
    made = api.submit(files=files)
    assert made.status_code == 201, made.text
    assert api.client.get("/v1/config").json()["max_clip_mb"] == 2
    # Its own limit (2 MB), not the photos' (1 MB); and a renamed non-video is still refused.
    padded = clip + b"\x00" * (3 << 20)
    big = api.submit(files=[("images", ("c.mp4", padded, "video/mp4"))])
    assert big.status_code == 413 and "2 MB" in big.json()["error"]["message"]
    avi = b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 100
    odd = api.submit(files=[("images", ("c.avi", avi, "video/x-msvideo"))])
    assert odd.status_code == 415 and "WebM clip" in odd.json()["error"]["message"]


def _kit(api: Api, headers: dict[str, str] = AUTH_A) -> dict[str, Any]:
    response = api.client.get("/v1/brand", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _spec_of(api: Api, response: Response, merchant: str = "alice") -> dict[str, Any]:
    assert response.status_code == 201, response.text
    paths = job_root(api.settings, merchant, response.json()["id"])
    return dict(json.loads(paths.request_file.read_text()))


def test_brand_colours_are_kept_and_given_to_each_job(api: Api) -> None:
    assert _kit(api) == {k: None for k in ("primary", "accent", "logo", "font", "music_track")}
    brand = {"primary": "#1D3557", "accent": "#E63946"}
    assert api.client.put("/v1/brand", json=brand, headers=AUTH_A).json() == brand
    bad = api.client.put("/v1/brand", json={"primary": "red", "accent": "#E63946"}, headers=AUTH_A)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "primary"
    assert {k: _kit(api)[k] for k in brand} == brand

    def spec_of(response: Response, merchant: str = "alice") -> dict[str, Any]:
        return _spec_of(api, response, merchant)

    assert spec_of(api.submit(AUTH_A)).get("brand") == brand  # the kept brand
    own = {**FIELDS, "brand_primary": "#FFFFFF", "brand_accent": "#000000"}
    assert spec_of(api.submit(AUTH_A, fields=own))["brand"] == {
        "primary": "#FFFFFF",
        "accent": "#000000",
    }
    assert spec_of(api.submit(AUTH_A, fields={**FIELDS, "brand": "false"})).get("brand") is None
    assert spec_of(api.submit(AUTH_B), "bob").get("brand") is None  # bob kept none
    odd = api.submit(AUTH_A, fields={**FIELDS, "brand_primary": "#12345"})
    assert odd.status_code == 422 and odd.json()["error"]["field"] == "brand"
    assert api.client.delete("/v1/brand/colours", headers=AUTH_A).status_code == 204
    assert _kit(api)["primary"] is None


def test_brand_files_are_checked_kept_and_copied_into_each_job(
    make_api: MakeApi, tmp_path: Path
) -> None:
    from media.brandkit.font import COVERAGE
    from tests.ad_helpers import made_font, made_track

    api = make_api(api={"keys": {"alice": KEY_A, "bob": KEY_B}}, media={"max_font_mb": 1})
    font = made_font(COVERAGE["en"] + " $.,!")
    song = made_track(tmp_path / "song.mp3", 4.0).read_bytes()
    buf = io.BytesIO()
    Image.new("RGBA", (240, 120), (200, 30, 60, 255)).save(buf, format="PNG")
    logo = buf.getvalue()

    def put(part: str, name: str, data: bytes, headers: dict[str, str] = AUTH_A) -> Response:
        files = {"file": (name, data, "application/octet-stream")}
        return api.client.put(f"/v1/brand/{part}", files=files, headers=headers)

    kept = put("font", "Acme.ttf", font)
    assert kept.status_code == 200, kept.text
    assert kept.json()["details"]["languages"] == ["en"]
    assert put("music_track", "jingle.mp3", song).json()["details"]["seconds_used"] > 3.5
    assert put("logo", "logo.png", logo).json()["details"] == {"width": 240, "height": 120}
    kit = _kit(api)
    assert (kit["font"]["name"], kit["font"]["bytes"]) == ("Acme.ttf", len(font))
    assert kit["music_track"]["details"]["codec"] == "mp3"

    # Refused with the reason, and nothing kept in its place.
    broken = put("font", "half.ttf", font[: len(font) // 2])
    assert broken.status_code == 422 and "half.ttf" in broken.json()["error"]["message"]
    assert put("font", "big.ttf", font + bytes(1 << 20)).status_code == 413
    assert put("music_track", "x.mp3", b"ID3" + bytes(4000)).status_code == 422
    assert put("sticker", "s.png", logo).status_code == 422
    assert _kit(api)["font"]["name"] == "Acme.ttf"

    # Each job gets copies of the kit's files, unless it sends its own or says brand=false.
    paths = job_root(api.settings, "alice", api.submit(AUTH_A).json()["id"])
    spec = json.loads(paths.request_file.read_text())
    assert (paths.root / spec["font"]).read_bytes() == font
    assert (paths.root / spec["music_track"]).read_bytes() == song
    assert spec["logo"] and (paths.root / spec["logo"]).read_bytes() == logo
    other = made_font(COVERAGE["en"], "Other Block")
    files = [*_photos(), ("font", ("own.otf", other, "font/otf"))]
    own = _spec_of(api, api.submit(AUTH_A, files=files))
    assert own["font"].endswith("own.otf") and own["music_track"]
    plain = _spec_of(api, api.submit(AUTH_A, fields={**FIELDS, "brand": "false"}))
    assert (plain["font"], plain["music_track"], plain["logo"]) == (None, None, None)
    assert _kit(api, AUTH_B)["font"] is None  # bob's kit is his own
    not_font = [*_photos(), ("font", ("f.ttf", b"GIF89a" + bytes(100), "font/ttf"))]
    assert api.submit(AUTH_A, files=not_font).status_code == 415

    assert api.client.delete("/v1/brand/font", headers=AUTH_A).status_code == 204
    assert _kit(api)["font"] is None and _kit(api)["music_track"] is not None
    assert api.client.delete("/v1/brand", headers=AUTH_A).status_code == 204
    assert all(v is None for v in _kit(api).values())
