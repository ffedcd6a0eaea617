"""The merchant API (and the voice server's door) against hostile clients.

What a stranger or a careless client can send must never reach a 5xx or another merchant's
data: requests fuzzed from the OpenAPI schema (schemathesis), every route tried without a key
and with the wrong one, one merchant's links and Idempotency-Keys aimed at another's jobs,
and uploads built to hurt (bombs, truncated and disguised files, names that climb out of the
job folder, malformed multipart, absurd headers). Each is a 4xx with the one JSON error shape,
or, where the API only checks the magic bytes, a job that fails in its first stage with a
reason the merchant can read.
"""

from __future__ import annotations

import gc
import io
import json
import random
import re
import struct
import uuid
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import fastapi.routing
import httpx
import pytest
import schemathesis
import websockets
from dramatiq.brokers.stub import StubBroker
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import status_code_conformance
from starlette.routing import Mount
from websockets.asyncio.client import connect

from base.errors import ConfigError
from media.pipeline import NarrationEngines
from voice.clients.realtime import RealtimeClient
from voice.runtime.latency import TurnLog
from voice.runtime.server import VoiceServer
from voice.runtime.turns import TurnPolicy
from voice.testing.fakes import EnergyVad
from voice.testing.harness import fake_engines, running_server
from workers import actors
from workers.actors import NARRATE, Context
from workers.api import ops
from workers.settings import load_settings
from workers.storage import open_storage
from workers.storage.local import job_root

from . import test_api
from .test_api import AUTH_A, AUTH_B, FIELDS, KEY_A, KEY_B, PHOTO, Api, MakeApi

if TYPE_CHECKING:
    # What starlette's TestClient returns (it prefers httpx2 to httpx).
    from httpx2 import Response

# A schemathesis test case, whatever the operation.
Case = schemathesis.Case[Any]

pytestmark = pytest.mark.redis
# test_api's fixtures: one app over the test Redis, with its own key prefix and data folder.
make_api = test_api.make_api
api = test_api.api

OPS_KEY = "ops-key-for-carol-0123456789"
AUTH_OPS = {"Authorization": f"Bearer {OPS_KEY}"}
KEYS = {"keys": {"alice": KEY_A, "bob": KEY_B}, "ops_keys": [OPS_KEY]}
# Per operation and generation mode. Enough to cross every branch of the validation (the
# API is thin over pydantic) while the whole file stays well under a minute on two cores.
FUZZ_EXAMPLES = 30
_ERROR_MESSAGE = re.compile(r"\S")


def _assert_error_shape(status: int, body: bytes, what: object) -> dict[str, Any]:
    """A 4xx is the one JSON error shape, with a message for people."""
    assert 400 <= status < 500, (what, status, body[:300])
    error = json.loads(body)["error"]
    assert isinstance(error["code"], str) and error["code"], (what, error)
    assert _ERROR_MESSAGE.search(error["message"]), (what, error)
    return dict(error)


# --- 1. Fuzzed from the schema ---------------------------------------------------------------


@pytest.mark.reliability("input", "API fuzzed from its OpenAPI schema (schemathesis)")
def test_schema_fuzzing_finds_no_server_error(
    make_api: MakeApi, record_property: Callable[[str, object], None]
) -> None:
    from media.copywriting.writer import Copywriter
    from tests.test_copywriting import GOOD, _writing

    api = make_api(api=KEYS)
    app = api.client.app
    # Copy drafts from a scripted model (the embedded one takes seconds a call): fuzzed facts
    # reach the policy, and the template's copy when the draft does not fit them.
    app.state.castwork.copydesk._writer = Copywriter([_writing(GOOD)])  # type: ignore[attr-defined]
    # A finished job of alice's: with its id fixed, the fuzzed queries reach the record, the
    # manifest and the link signatures instead of stopping at "no such job".
    done = api.submit(AUTH_A).json()["id"]
    api.finish(done, "alice")
    ops_paths = {r.path for r in ops.router.routes if isinstance(r, APIRoute)}

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), results  # every operation could be read
    labels = {op.label for op in operations}
    assert {"POST /v1/jobs", "GET /v1/jobs/{job_id}/files/{name}", "GET /healthz"} <= labels
    tried: dict[str, int] = dict.fromkeys(labels, 0)
    statuses: dict[int, int] = {}

    def check(case: Case, headers: dict[str, str]) -> None:
        response = case.call(headers=headers)
        tried[case.operation.label] += 1
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        # Raises with a curl line to reproduce on a 5xx or a status the schema does not list.
        case.validate_response(
            response, checks=[not_a_server_error, status_code_conformance], headers=headers
        )
        if response.status_code >= 400:
            _assert_error_shape(response.status_code, response.content, case.as_curl_command())

    for op in operations:
        key = AUTH_OPS if op.path in ops_paths else AUTH_A
        # Deterministic boundary cases first: missing and wrong-typed fields, limits +-1,
        # methods the route does not have.
        for case in schema.iter_coverage_cases(
            op,
            generation_modes=list(GenerationMode),
            generation_config=schema.config.generation_for(operation=op),
        ):
            check(case, key)

        modes = [GenerationMode.POSITIVE]
        if op.body or any(True for _ in op.iter_parameters()):
            modes.append(GenerationMode.NEGATIVE)  # nothing to break in a parameterless GET
        passes: list[tuple[dict[str, Any], dict[str, str]]] = [({}, key)]
        if "{job_id}" in op.path:
            passes.append(({"job_id": done}, key))
            if "/files/" in op.path:
                # No key: only the fuzzed expires/signature stand between a stranger and it.
                passes.append(({"job_id": done}, {}))
        for mode in modes:
            for path_parameters, headers in passes:
                strategy = op.as_strategy(mode, path_parameters=path_parameters or None)
                _fuzz(strategy, headers, check)
    record_property("operations", len(operations))
    record_property("tried", sum(tried.values()))
    record_property("jobs_created", statuses.get(201, 0))
    assert all(n > 0 for n in tried.values()), tried  # every operation was exercised
    assert statuses.get(201, 0) > 0, statuses  # fuzzed copy made it through to a job
    assert not any(s >= 500 for s in statuses), statuses


def _fuzz(
    strategy: st.SearchStrategy[Case],
    headers: dict[str, str],
    check: Callable[[Case, dict[str, str]], None],
) -> None:
    @given(case=strategy, shape=st.sampled_from(["as drawn", "real photo", "headline only"]))
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case, shape: str) -> None:
        # Random bytes are never an image (415) and random copy rarely passes JobSpec (422):
        # send a real JPEG, and sometimes only it and the fuzzed headline, so fuzzed text
        # goes on to the job folder, the record and the queue.
        body = case.body
        if shape != "as drawn" and isinstance(body, dict) and "images" in body:
            form = cast(dict[str, Any], body)
            form["images"] = [PHOTO]
            if shape == "headline only":
                for field in set(form) - {"images", "headline"}:
                    del form[field]
        check(case, headers)

    run()


# --- 2. Keys ---------------------------------------------------------------------------------

# What anyone may fetch, and why. Every other route needs a key; a route added later is
# checked as one that needs a key until it is listed here.
PUBLIC = {
    "/": "the merchant page: static HTML that asks for the key in the browser",
    "/static": "the page's script and styles",
    "/dashboard": "the dashboard page shell; its data is /v1/ops/turns",
    "/healthz": "liveness for load balancers and probes",
    "/talk": "a redirect to the voice server's talk page (a static page; it needs a secret)",
    "/v1/templates": "template names for the page's form, before any key is entered",
    "/v1/config": "limits, and whether a key is needed at all: the page asks before it has one",
    "/openapi.json": "the API's published schema",
    "/docs": "schema viewer",
    "/docs/oauth2-redirect": "schema viewer",
    "/redoc": "schema viewer",
}


@pytest.mark.reliability("input", "every API route without a key, with a wrong or wrong-kind key")
def test_every_route_needs_a_key(
    make_api: MakeApi, record_property: Callable[[str, object], None]
) -> None:
    api = make_api(api=KEYS)
    app = api.client.app
    assert isinstance(app, FastAPI)
    job_id = api.submit(AUTH_A).json()["id"]
    api.finish(job_id, "alice")  # a real job and file: a 404 cannot hide a missing key check
    values = {"job_id": job_id, "name": "1x1.mp4", "part": "font"}
    ops_paths = {r.path for r in ops.router.routes if isinstance(r, APIRoute)}

    probes: list[tuple[str, str, str]] = []  # method, URL, route path
    for path, methods, mounted in _all_routes(app):
        if mounted:
            assert path in PUBLIC, f"mounted {path}: list it in PUBLIC or guard it"
            probes.append(("GET", f"{path}/app.js", path))
        else:
            assert methods, f"{path}: not an HTTP route; check its auth and add it here"
            url = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m[1]], path)
            probes += [(method, url, path) for method in sorted(methods)]
    covered = {path for _, _, path in probes}
    assert set(PUBLIC) <= covered, set(PUBLIC) - covered  # no stale entries
    assert {"/v1/jobs", "/v1/jobs/{job_id}/cancel", "/v1/ops/turns", "/metrics"} <= covered

    def send(method: str, url: str, headers: dict[str, str]) -> Response:
        body: dict[str, Any] = {}
        if method == "POST":  # a complete, valid job: only the key can be wrong
            body = {"data": FIELDS, "files": [("images", ("p.jpg", PHOTO, "image/jpeg"))]}
        return api.client.request(method, url, headers=headers, follow_redirects=False, **body)

    tried = refused = 0
    for method, url, path in probes:
        if path in PUBLIC:
            r = send(method, url, {})
            expected = 307 if path == "/talk" else 200
            assert r.status_code == expected, (method, url, r.status_code)
            continue
        right, other_kind = (AUTH_OPS, AUTH_A) if path in ops_paths else (AUTH_A, AUTH_OPS)
        for headers in [
            {},
            {"Authorization": "Bearer not-a-key-at-all"},
            {"X-API-Key": "not-a-key-at-all"},
            {"Authorization": f"Basic {KEY_A}"},  # a key, but not as a bearer token
            other_kind,  # merchant keys do not open operator routes, nor the reverse
        ]:
            r = send(method, url, headers)
            tried += 1
            assert r.status_code == 401, (method, url, headers, r.status_code, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert _assert_error_shape(r.status_code, r.content, url)["code"] == "unauthorized"
            refused += 1
        # The right key gets past the door (the refusals above were about the key).
        r = send(method, url, right)
        assert r.status_code not in (401, 403), (method, url, r.status_code, r.text)
    record_property("tried", tried)
    record_property("refused", refused)


def _all_routes(app: FastAPI) -> list[tuple[str, set[str], bool]]:
    """(path, methods, is a mount) for every route, those of included routers too."""
    # Newer FastAPI keeps an included router as one entry of app.routes; this flattens it.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    contexts: list[Any] = list(flatten(app.routes) if flatten else app.routes)
    routes = []
    for context in contexts:
        original = getattr(context, "original_route", context)
        routes.append((str(context.path), set(context.methods or ()), isinstance(original, Mount)))
    return routes


@pytest.mark.reliability("input", "operator routes with merchant keys but no operator keys")
def test_operator_routes_are_closed_when_merchant_keys_are_in_force(api: Api) -> None:
    """On loopback (behind a reverse proxy, say) with merchant keys and no operator keys,
    /metrics and the dashboard's data are closed, as they are on a public address: keys are
    in force. They used to be open to anyone there."""
    for path in ("/metrics", "/v1/ops/turns", "/v1/ops/health"):
        for headers in ({}, AUTH_A, AUTH_B):
            r = api.client.get(path, headers=headers)
            assert r.status_code == 403, (path, headers, r.status_code)
            assert "api.ops_keys" in r.json()["error"]["message"]
    assert api.client.get("/dashboard").status_code == 200  # the shell holds no data


@pytest.mark.reliability("input", "voice server: wrong keys, keys offered other ways")
async def test_voice_server_needs_its_key(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """test_voice_server covers no key at all; here the key is wrong or sent where the server
    does not read it (only ``Authorization: Bearer``)."""
    async with running_server(tmp_path, fake_engines(), voice={"api_keys": ["vk-1"]}) as (
        url,
        _,
        _,
    ):
        refused = []
        for target, headers in [
            (url, {"Authorization": "Bearer vk-2"}),
            (url, {"X-API-Key": "vk-1"}),
            (f"{url}?api_key=vk-1", {}),
            (f"{url}?authorization=Bearer%20vk-1", {}),
        ]:
            with pytest.raises(websockets.InvalidStatus) as caught:
                async with connect(target, additional_headers=headers):
                    pass
            refused.append(caught.value.response.status_code)
        ok = await RealtimeClient.open(url, api_key="vk-1")
        await ok.close()

        base = url.replace("ws://", "http://").removesuffix("/v1/realtime")
        async with httpx.AsyncClient() as http:
            for target, headers in [
                ("/metrics", {"X-API-Key": "vk-1"}),
                ("/metrics", {"Authorization": "Bearer vk-12"}),  # the key and one more character
                ("/metrics?key=vk-1", {}),
            ]:
                r = await http.get(f"{base}{target}", headers=headers)
                refused.append(r.status_code)
            assert (await http.get(f"{base}/healthz")).status_code == 200  # probes stay open
    assert refused == [401] * 7
    record_property("tried", len(refused))
    record_property("refused", refused.count(401))


@pytest.mark.reliability("input", "voice server started without keys on a public address")
async def test_voice_server_without_keys_refuses_to_listen_beyond_loopback(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    def server(voice: dict[str, Any]) -> VoiceServer:
        settings = load_settings(data_dir=tmp_path, voice=voice)
        return VoiceServer(
            settings, fake_engines(), EnergyVad(), policy=TurnPolicy(), turn_log=TurnLog(None)
        )

    hosts = ["0.0.0.0", "::", "", "192.168.1.20", "voice.example.com"]
    for host in hosts:
        with pytest.raises(ConfigError, match=r"voice\.api_keys"):
            server({"host": host})
        # The same for an address given at start (castwork voice --host): it used to bind.
        with pytest.raises(ConfigError, match=r"voice\.api_keys"):
            await server({"host": "127.0.0.1"}).start(host, 0)
    keyed = server({"host": "0.0.0.0", "api_keys": ["vk-1"]})  # with a key, any address
    srv = await keyed.start("127.0.0.1", 0)
    srv.close()
    await srv.wait_closed()
    record_property("tried", 2 * len(hosts))
    record_property("refused", 2 * len(hosts))


# --- 3. Merchants apart ----------------------------------------------------------------------


def _done_job(api: Api, auth: dict[str, str], merchant: str) -> str:
    job_id = str(api.submit(auth).json()["id"])
    api.finish(job_id, merchant)
    return job_id


@pytest.mark.reliability("input", "signed links moved to another job or merchant")
def test_a_signed_link_opens_only_its_own_job(api: Api) -> None:
    a1, a2 = _done_job(api, AUTH_A, "alice"), _done_job(api, AUTH_A, "alice")
    b1 = _done_job(api, AUTH_B, "bob")
    link = api.client.get(f"/v1/jobs/{a1}", headers=AUTH_A).json()["outputs"][0]["video_url"]
    assert api.client.get(link).status_code == 200
    query = link.partition("?")[2]
    for other in (a2, b1, a1.upper(), a1[:-1], f"{a1}0"):
        r = api.client.get(f"/v1/jobs/{other}/files/1x1.mp4?{query}")
        assert r.status_code == 401, (other, r.status_code)
        # Word for word what a missing job gets: a link reveals nothing about other ids.
        assert r.json()["error"]["message"].startswith("the link is invalid or has expired")


@pytest.mark.reliability("input", "job list paged with another merchant's jobs in the store")
def test_listing_pages_never_mix_merchants(api: Api) -> None:
    for i in range(3):
        api.submit(AUTH_A, fields={**FIELDS, "headline": f"Alice {i}"})
    for i in range(2):
        api.submit(AUTH_B, fields={**FIELDS, "headline": f"Bob {i}"})
    for auth, merchant_jobs in ((AUTH_A, 3), (AUTH_B, 2)):
        mine = [j["id"] for j in api.client.get("/v1/jobs?limit=100", headers=auth).json()["jobs"]]
        assert len(mine) == merchant_jobs
        for limit, offset in [(1, 0), (1, 1), (2, 1), (1, 2), (5, 3), (100, 100_000)]:
            r = api.client.get(f"/v1/jobs?limit={limit}&offset={offset}", headers=auth)
            page = [j["id"] for j in r.json()["jobs"]]
            # Paging walks this merchant's list only: the other's jobs never fill a page.
            assert page == mine[offset : offset + limit], (auth, limit, offset)
        others = AUTH_B if auth is AUTH_A else AUTH_A
        for job_id in mine:
            assert api.client.get(f"/v1/jobs/{job_id}", headers=others).status_code == 404


@pytest.mark.reliability("input", "one merchant's Idempotency-Key reused by another")
def test_the_same_idempotency_key_is_each_merchants_own(api: Api) -> None:
    """test_api checks that bob's use of alice's key is a 201; here: it is bob's own job,
    bob's request (not a conflict with alice's), in bob's folder, and alice's key still
    replays alice's job."""
    key = {"Idempotency-Key": "order-7"}
    a = api.submit({**AUTH_A, **key}).json()["id"]
    r = api.submit({**AUTH_B, **key}, fields={**FIELDS, "headline": "Bob's own ad"})
    assert r.status_code == 201, r.text  # not alice's job, not a conflict with her request
    b = r.json()["id"]
    assert b != a and r.json()["fields"]["headline"] == "Bob's own ad"
    assert api.client.get(f"/v1/jobs/{b}", headers=AUTH_A).status_code == 404
    assert api.submit({**AUTH_A, **key}).json()["id"] == a
    again = api.submit({**AUTH_B, **key}, fields={**FIELDS, "headline": "Bob's own ad"})
    assert (again.status_code, again.json()["id"]) == (200, b)
    assert job_root(api.settings, "bob", b).uploads.is_dir()
    assert not job_root(api.settings, "alice", b).root.exists()


# --- 4. Hostile uploads ----------------------------------------------------------------------


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _bomb_png(side: int) -> bytes:
    """A valid all-black 1-bit PNG: a few hundred KB on disk, side² pixels once decoded."""
    row = bytes(1 + (side + 7) // 8)
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    blocks, rest = divmod(side, 1000)
    chunks = [packer.compress(row * 1000) for _ in range(blocks)] + [packer.compress(row * rest)]
    idat = b"".join(chunks) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _noisy_jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    pixels = random.Random(3).randbytes(size[0] * size[1] * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _huge_jpeg_header(width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(_noisy_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _zip() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("photo.jpg", PHOTO)
    return buf.getvalue()


class _NoEngines(NarrationEngines):
    """The narrate stage must fail in prepare, before any voice would be loaded."""

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        raise AssertionError(f"prepare let a hostile upload through (wanted {key})")


# (label, field, file name, bytes, where it is refused, words the reason must contain)
_HOSTILE: list[tuple[str, str, str, bytes, str, str]] = [
    (
        "random bytes",
        "images",
        "photo.png",
        random.Random(5).randbytes(4096),
        "api",
        "not an image",
    ),
    (
        "SVG",
        "images",
        "photo.jpg",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
        "api",
        "not an image",
    ),
    (
        "HTML",
        "images",
        "photo.jpg",
        b"<!DOCTYPE html><script>alert(1)</script>",
        "api",
        "not an image",
    ),
    ("ZIP", "images", "photo.jpg", _zip(), "api", "not an image"),
    (
        "PDF",
        "logo",
        "logo.jpg",
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        "api",
        "not an image",
    ),
    ("empty file", "images", "photo.jpg", b"", "api", "not an image"),
    (
        "PNG magic, then garbage",
        "images",
        "photo.png",
        b"\x89PNG\r\n\x1a\n" + random.Random(6).randbytes(2048),
        "job",
        "truncated or corrupt",
    ),
    ("truncated JPEG", "images", "cut.jpg", _noisy_jpeg()[:6000], "job", "truncated or corrupt"),
    ("PNG bomb (900 MP)", "images", "bomb.png", _bomb_png(30_000), "job", "megapixel"),
    ("PNG bomb as logo", "logo", "logo.png", _bomb_png(30_000), "job", "megapixel"),
    (
        "JPEG header 65000x65000",
        "images",
        "huge.jpg",
        _huge_jpeg_header(65_000, 65_000),
        "job",
        "megapixel",
    ),
    (
        "JPEG header 20000x300",
        "images",
        "wide.jpg",
        _huge_jpeg_header(20_000, 300),
        "job",
        "larger than the 12000 px limit",
    ),
]


@pytest.mark.reliability("input", "hostile images through POST /v1/jobs (bombs, fakes, truncated)")
def test_hostile_images_are_refused_with_a_reason(
    api: Api, record_property: Callable[[str, object], None]
) -> None:
    before = _files_under(api.settings.data_dir)
    narrate = actors.declare(
        Context(
            api.settings,
            api.store,
            StubBroker(),
            _NoEngines(api.settings),
            open_storage(api.settings),
        )
    )[NARRATE]
    created: list[str] = []
    refused = 0
    for label, field, name, data, where, words in _HOSTILE:
        files = [("images", ("ok.jpg", _noisy_jpeg(), "image/jpeg"))]
        if field == "images":
            files = [("images", (name, data, "image/jpeg"))]
        else:
            files.append(("logo", (name, data, "image/png")))
        r = api.submit(AUTH_A, fields={**FIELDS, "headline": label}, files=files)
        if where == "api":
            assert r.status_code == 415, (label, r.status_code, r.text)
            error = _assert_error_shape(r.status_code, r.content, label)
            assert error["field"] == field, (label, error)
            assert name in error["message"] and words in error["message"], (label, error)
        else:
            # Only the magic bytes are checked at the door; the first stage decodes the header.
            assert r.status_code == 201, (label, r.status_code, r.text)
            job_id = r.json()["id"]
            created.append(job_id)
            narrate(job_id)
            job = api.client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).json()
            assert job["status"] == "failed", (label, job)
            assert job["error"]["code"] == "bad_input", (label, job["error"])
            assert name in job["error"]["message"] and words in job["error"]["message"], (
                label,
                job["error"],
            )
        refused += 1
    # The refused-at-the-door ones left nothing behind; the rest only in their job's folder.
    roots = [job_root(api.settings, "alice", j).root for j in created]
    for path in _files_under(api.settings.data_dir) - before:
        assert any(path.is_relative_to(root) for root in roots), path
    record_property("tried", len(_HOSTILE))
    record_property("refused", refused)
    assert refused == len(_HOSTILE)


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# A name no other run uses: were it written there, the check below would see it.
_OUTSIDE = Path("/tmp") / f"castwork-hostile-{uuid.uuid4().hex}.jpg"
# (raw file name as the client sends it, the name it must be stored under; None: any safe one)
_NAMES: list[tuple[bytes, str | None]] = [
    (b"../../etc/passwd.jpg", "passwd.jpg"),
    (b"../../../../../../../.." + str(_OUTSIDE).encode(), _OUTSIDE.name),
    (str(_OUTSIDE).encode(), _OUTSIDE.name),
    (b"..\\..\\windows\\win.ini.jpg", "win.ini.jpg"),
    (b"photo\x00.php.jpg", "photo_.php.jpg"),
    (b"y" * 300 + b".jpg", "y" * 76 + ".jpg"),  # cut to 80, the extension kept
    (b"x" * 5000 + b".jpg", None),  # python-multipart refuses a header this long (400)
    (b"..", "upload"),
    (b".htaccess", "htaccess"),
    (b"caf\xc3\xa9 \xe2\x80\xae.jpg", "cafe__.jpg"),
    (b"a\r\nContent-Type: text/html.jpg", None),  # may be cut at the line break
]


@pytest.mark.reliability("input", "upload file names that climb out of the job folder")
def test_hostile_file_names_stay_in_the_job_folder(
    api: Api, record_property: Callable[[str, object], None]
) -> None:
    before = _files_under(api.settings.data_dir)
    tried = sanitized = 0
    for raw, expected in _NAMES:
        body, content_type = _multipart(FIELDS, [("images", raw, PHOTO)])
        r = api.client.post(
            "/v1/jobs", content=body, headers={**AUTH_A, "Content-Type": content_type}
        )
        tried += 1
        if r.status_code >= 400:  # refusing a name is fine; a 5xx is not
            _assert_error_shape(r.status_code, r.content, raw)
            continue
        assert r.status_code == 201, (raw, r.status_code, r.text)
        uploads = job_root(api.settings, "alice", r.json()["id"]).uploads
        (stored,) = list(uploads.iterdir())
        assert stored.read_bytes() == PHOTO
        assert re.fullmatch(r"00-[A-Za-z0-9_-][A-Za-z0-9._-]{0,79}", stored.name), (raw, stored)
        if expected is not None:
            assert stored.name == f"00-{expected}", (raw, stored.name)
        sanitized += 1
    # Everything written is inside one of alice's job folders.
    new = _files_under(api.settings.data_dir) - before
    jobs = job_root(api.settings, "alice", "0" * 12).root.parent
    for path in new:
        rel = path.relative_to(jobs).parts
        assert len(rel) >= 2 and re.fullmatch(r"[0-9a-f]{8,64}", rel[0]), path
    assert not _OUTSIDE.exists()
    record_property("tried", tried)
    record_property("refused", tried - sanitized)
    record_property("sanitized", sanitized)


def _multipart(
    fields: dict[str, str], files: list[tuple[str, bytes, bytes]], boundary: str = "h0st1le"
) -> tuple[bytes, str]:
    """A multipart body built by hand, so the file name goes out byte for byte as given."""
    out = b""
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, filename, data in files:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '.encode()
        out += b'filename="' + filename + b'"\r\nContent-Type: image/jpeg\r\n\r\n' + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


async def _raw(
    api: Api, method: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, bytes]:
    status, content, _ = await test_api.asgi_call(api, method, headers, [body])
    return status, content


@pytest.mark.reliability("input", "malformed requests: absurd headers, broken multipart, floods")
async def test_malformed_requests_are_4xx(
    make_api: MakeApi, record_property: Callable[[str, object], None]
) -> None:
    api = make_api(api={**KEYS, "max_request_mb": 2}, media={"max_image_mb": 1})
    auth = (b"authorization", f"Bearer {KEY_A}".encode())
    form, multipart = _multipart(FIELDS, [("images", b"p.jpg", PHOTO)])
    ctype = (b"content-type", multipart.encode())
    many, many_type = _multipart(FIELDS, [("images", b"p.jpg", b"\xff\xd8\xff")] * 1001)
    big_logo, big_logo_type = _multipart(
        FIELDS,
        [
            ("images", b"p.jpg", PHOTO),
            ("logo", b"logo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (1 << 20)),
        ],
    )
    cases: list[tuple[str, list[tuple[bytes, bytes]], bytes, int]] = [
        (
            "Content-Length in superscript digits",
            [auth, ctype, (b"content-length", "²".encode("latin-1"))],
            form,
            400,
        ),
        (
            "Content-Length of 5000 digits",
            [auth, ctype, (b"content-length", b"9" * 5000)],
            form,
            413,
        ),
        (
            "Content-Length over 2**64",
            [auth, ctype, (b"content-length", b"36893488147419103232")],
            form,
            413,
        ),
        (
            "Content-Length with leading zeros",
            [auth, ctype, (b"content-length", b"0" * 40 + b"3000000")],
            form,
            413,
        ),
        ("negative Content-Length", [auth, ctype, (b"content-length", b"-1")], form, 400),
        ("no boundary", [auth, (b"content-type", b"multipart/form-data")], form, 400),
        (
            "wrong boundary",
            [auth, (b"content-type", b"multipart/form-data; boundary=other")],
            form,
            400,
        ),
        ("unterminated multipart", [auth, ctype], form[: len(form) // 2], 422),
        (
            "JSON instead of a form",
            [auth, (b"content-type", b"application/json")],
            b'{"headline": "x"}',
            422,
        ),
        ("1001 file parts", [auth, (b"content-type", many_type.encode())], many, 400),
        (
            "a 1 MB logo over the limit",
            [auth, (b"content-type", big_logo_type.encode())],
            big_logo,
            413,
        ),
        ("non-ASCII Idempotency-Key", [auth, ctype, (b"idempotency-key", b"\xe9t\xe9")], form, 422),
        ("non-ASCII key", [(b"authorization", b"Bearer \xe9\xff"), ctype], form, 401),
        ("a key of 64 KB", [(b"x-api-key", b"k" * 65536), ctype], form, 401),
    ]
    refused = 0
    for label, headers, body, expected in cases:
        with warnings.catch_warnings():
            if label == "unterminated multipart":
                # Starlette never closes the spool file of a part the body ends inside of;
                # its finalizer closes it (with a ResourceWarning) once the request is gone.
                warnings.simplefilter("ignore", ResourceWarning)
            status, content = await _raw(api, "POST", headers, body)
            gc.collect()
        assert status == expected, (label, status, content[:300])
        _assert_error_shape(status, content, label)
        refused += 1
    assert api.enqueued() == []
    record_property("tried", len(cases))
    record_property("refused", refused)
