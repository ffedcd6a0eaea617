"""The merchant API against other web sites, and what it lets out.

Without keys the API trusts that only this machine reaches it; a page on any site can still
reach it through the visitor's browser: by DNS rebinding (its own name resolved to
127.0.0.1, sent as ``Host``), or by sending a form or a simple fetch cross-site (with its
``Origin``, or none). All of those are refused before a byte of the body is read. Also here:
download links signed with a secret of the server's own (never a merchant's key), and a
``/healthz`` that says ok or not, never why. The same attacks through a real browser are in
tests/test_web.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from fastapi.testclient import TestClient

from base.access import host_matches, origin_allowed, split_authority, trusted_host
from workers.api import CSRF_HEADER, LINK_SECRET_FILE, create_app
from workers.settings import load_settings
from workers.store import JobStore

from . import test_api
from .test_api import AUTH_A, FIELDS, KEY_A, KEY_B, LOCAL, Api, MakeApi, _photos

pytestmark = pytest.mark.redis
make_api = test_api.make_api

KEYS = {"alice": KEY_A, "bob": KEY_B}
OPS_KEY = "ops-key-for-carol-0123456789"
# Host headers a browser sends for a page of another site whose name resolves to us.
REBOUND_HOSTS = [
    "evil.example",
    "evil.example:8000",
    "127.0.0.1.nip.io:8000",
    "localhost.evil.example:8000",
    "0.0.0.0:8000",
    "192.168.1.20:8000",
    "[::ffff:127.0.0.1]:8000",
    "localhost:8000@evil.example",
    "localhost.:8000",
    "",
]
LOOPBACK_HOSTS = [
    "localhost",
    "localhost:8000",
    "LocalHost:1",
    "127.0.0.1:8000",
    "127.0.0.2",
    "[::1]:8000",
]
FOREIGN_ORIGINS = [
    "http://evil.example",
    "https://evil.example:8000",
    "http://127.0.0.1.nip.io:8000",
    "http://localhost.evil.example",
    "null",
    "file://",
    "chrome-extension://abcdef",
]


def _error(r: Any) -> dict[str, Any]:
    body: dict[str, Any] = r.json()["error"]
    return body


def _stranger(api: Api) -> TestClient:
    """A client of the same app that sends what a browser would from another site: no
    custom header of the page's own."""
    return TestClient(api.client.app, base_url=LOCAL)


def _post_job(client: TestClient, headers: dict[str, str]) -> Any:
    return client.post("/v1/jobs", data=FIELDS, files=_photos(), headers=headers)


# --- The rules (base.access) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("localhost", ("localhost", None)),
        ("LOCALHOST:8000", ("localhost", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::1]", ("::1", None)),
        ("::1", None),  # IPv6 in a Host header needs its brackets
        ("a:b", None),
        ("host:99999", None),
        ("host:0", None),
        ("user@host", None),
        ("", None),
        ("host/path", None),
    ],
)
def test_host_headers_are_read_strictly(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_authority(value) == parsed


def test_host_patterns() -> None:
    assert host_matches("ads.example.com", ["ads.example.com"])
    assert host_matches("a.shop.example", ["*.shop.example"])
    assert not host_matches("shop.example", ["*.shop.example"])  # subdomains only
    assert not host_matches("evilshop.example", ["*.shop.example"])
    assert host_matches("::1", ["[::1]"]) and host_matches("anything", ["*"])
    assert trusted_host(None, loopback_only=False, allowed=["*"])
    assert not trusted_host(None, loopback_only=False, allowed=["ads.example.com"])
    assert not trusted_host("evil.example", loopback_only=True, allowed=["*"])  # "*" is no key


def test_origins() -> None:
    def own(origin: str) -> bool:
        return origin_allowed(origin, host_header="ads.example.com", loopback_only=False)

    assert own("https://ads.example.com")  # behind a TLS proxy: the Host has no port
    assert own("http://ads.example.com:80")
    assert not own("https://ads.example.com:8443")
    assert not own("https://evil.example")
    assert not own("null")
    assert origin_allowed("http://localhost:3000", host_header="127.0.0.1:8000", loopback_only=True)
    assert not origin_allowed("http://localhost.evil.example", host_header=None, loopback_only=True)
    assert not origin_allowed("ftp://localhost", host_header=None, loopback_only=True)


# --- DNS rebinding ---------------------------------------------------------------------------


@pytest.mark.reliability("input", "DNS rebinding: a keyless API asked for under another host name")
async def test_a_keyless_api_answers_only_to_loopback_names(
    make_api: MakeApi, record_property: Callable[[str, object], None]
) -> None:
    """The issue's reproduction (a foreign Host and Origin got 201 on POST /v1/jobs) and
    the reads a rebound page would make: every one refused, nothing queued."""
    api = make_api()
    tried = refused = 0
    for host in REBOUND_HOSTS:
        rebound = {"Host": host, "Origin": f"http://{host}"}
        for method, path in [("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/")]:
            if method == "POST":
                r = _post_job(api.client, rebound)
            else:
                r = api.client.request(method, path, headers=rebound)
            tried += 1
            assert r.status_code == 400, (host, method, path, r.status_code, r.text)
            assert _error(r)["code"] == "untrusted_host"
            assert "localhost, 127.0.0.1 or [::1]" in _error(r)["message"]
            refused += 1
    for headers in ([], [(b"host", b"localhost"), (b"host", b"evil.example")]):
        status, body, _ = await test_api.asgi_call(
            api, "GET", headers, [b""], local=False
        )  # no Host, or two
        tried += 1
        assert status == 400 and json.loads(body)["error"]["code"] == "untrusted_host"
        refused += 1
    assert api.enqueued() == [] and api.store.list("local") == []
    for host in LOOPBACK_HOSTS:
        assert api.client.get("/v1/jobs", headers={"Host": host}).status_code == 200, host
    assert _post_job(api.client, {"Host": "[::1]:8000"}).status_code == 201
    record_property("tried", tried)
    record_property("refused", refused)


def test_a_keyed_api_answers_its_allowed_hosts(make_api: MakeApi) -> None:
    anywhere = make_api(api={"keys": KEYS})  # default "*": the keys guard it
    assert (
        anywhere.client.get("/v1/jobs", headers={**AUTH_A, "Host": "evil.example"}).status_code
        == 200
    )
    api = make_api(api={"keys": KEYS, "allowed_hosts": ["ads.example.com", "*.shop.example"]})
    for host, status in [
        ("ads.example.com", 200),
        ("ads.example.com:8443", 200),
        ("eu.shop.example", 200),
        ("shop.example", 400),
        ("evil.example", 400),
        ("127.0.0.1:8000", 400),
    ]:
        r = api.client.get("/v1/jobs", headers={**AUTH_A, "Host": host})
        assert r.status_code == status, (host, r.text)
        if status == 400:
            assert "api.allowed_hosts" in _error(r)["message"]


# --- Cross-site requests ---------------------------------------------------------------------


@pytest.mark.reliability("input", "state-changing requests from another site's page (Origin)")
def test_requests_from_another_origin_are_refused(
    make_api: MakeApi, record_property: Callable[[str, object], None]
) -> None:
    keyless = make_api()
    job_id = _post_job(keyless.client, {}).json()["id"]
    keyed = make_api(api={"keys": KEYS})
    tried = 0
    for origin in FOREIGN_ORIGINS:
        for api, auth in [(keyless, {}), (keyed, AUTH_A)]:
            headers = {**auth, "Origin": origin}
            for r in [
                _post_job(api.client, headers),
                api.client.post(f"/v1/jobs/{job_id}/cancel", headers=headers),
            ]:
                tried += 1
                assert r.status_code == 403, (origin, r.status_code, r.text)
                assert _error(r)["code"] == "cross_origin" and repr(origin) in _error(r)["message"]
    assert keyless.store.get(job_id).status == "queued" and len(keyless.enqueued()) == 1
    assert keyed.store.list("alice") == []
    # A read from another origin is not refused here: the browser keeps its answer from the
    # page (no CORS), and a rebound name is refused by Host above.
    assert (
        keyless.client.get("/v1/jobs", headers={"Origin": "http://evil.example"}).status_code == 200
    )
    # Pages that may: on this machine (keyless, any port), the API's own site (keyed).
    for origin in ("http://localhost:3000", "http://127.0.0.1:8000", "http://[::1]:8000"):
        assert _post_job(keyless.client, {"Origin": origin}).status_code == 201, origin
    own = {**AUTH_A, "Host": "ads.example.com", "Origin": "https://ads.example.com"}
    assert _post_job(keyed.client, own).status_code == 201
    other_port = {**own, "Origin": "https://ads.example.com:8443"}
    assert _post_job(keyed.client, other_port).status_code == 403
    record_property("tried", tried)
    record_property("refused", tried)


@pytest.mark.reliability("input", "a form posted from another site to a keyless API (CSRF)")
def test_a_form_from_another_site_cannot_submit_or_cancel(make_api: MakeApi) -> None:
    """What a cross-site ``<form enctype="multipart/form-data" method="post">`` sends: the
    body, and no header of the page's own. Browsers add an Origin, but not all (and not
    always): without one, only the missing CSRF header tells it from the page."""
    api = make_api()
    stranger = _stranger(api)
    job_id = _post_job(api.client, {}).json()["id"]  # the page's own (it sends the header)
    for r in [
        _post_job(stranger, {}),
        _post_job(stranger, {"Origin": "http://localhost:3000"}),  # another local page
        stranger.post(f"/v1/jobs/{job_id}/cancel"),
        stranger.post(
            f"/v1/jobs/{job_id}/cancel", content=b"", headers={"Content-Type": "text/plain"}
        ),
    ]:
        assert r.status_code == 403, r.text
        error = _error(r)
        assert error["code"] == "csrf" and error["field"] == CSRF_HEADER
        assert CSRF_HEADER in error["message"]
    assert [r.id for r in api.store.list("local")] == [job_id]
    assert api.store.get(job_id).status == "queued" and len(api.enqueued()) == 1
    assert stranger.get("/v1/jobs").status_code == 200  # reading needs no header
    # With keys, the key header is what no form can send: nothing more is asked.
    keyed = make_api(api={"keys": KEYS})
    assert _post_job(_stranger(keyed), AUTH_A).status_code == 201


def test_the_schema_lists_the_refusals(make_api: MakeApi) -> None:
    paths = make_api().client.get("/openapi.json").json()["paths"]
    assert "403" in paths["/v1/jobs"]["post"]["responses"]
    assert "403" in paths["/v1/jobs/{job_id}/cancel"]["post"]["responses"]


# --- Signed links ----------------------------------------------------------------------------


def _link(api: Api) -> tuple[str, str, dict[str, str]]:
    job_id = api.submit(AUTH_A).json()["id"]
    api.finish(job_id, "alice")
    url = api.client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).json()["outputs"][0]["video_url"]
    path, _, query = str(url).partition("?")
    return url, path, dict(p.split("=") for p in query.split("&"))


@pytest.mark.reliability("input", "download link forged with the merchant's own API key")
def test_links_are_signed_with_a_server_secret_not_the_merchants_key(
    make_api: MakeApi, tmp_path: Path
) -> None:
    """A merchant (or whoever holds its key) could sign links before: the key was the
    HMAC key. Now it is the server's link secret, derived per merchant."""
    api = make_api(api={"keys": KEYS})
    url, path, params = _link(api)
    assert api.client.get(url).status_code == 200
    name, expires = path.rsplit("/", 1)[1], params["expires"]
    job_id = path.split("/")[3]
    with_key = hmac.new(
        KEY_A.encode(), f"{job_id}/{name}/{expires}".encode(), hashlib.sha256
    ).hexdigest()
    assert with_key != params["signature"]
    assert api.client.get(f"{path}?expires={expires}&signature={with_key}").status_code == 401

    secret = tmp_path / LINK_SECRET_FILE  # make_api's data_dir is tmp_path
    made = secret.read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(made.strip()) == 64
    restarted = Api(api.settings, api.store, StubBroker())  # same data_dir: same secret
    assert restarted.client.get(url).status_code == 200
    assert secret.read_text() == made
    restarted.client.close()
    configured = make_api(api={"keys": KEYS, "link_secret": "another-secret-0123456789"})
    assert configured.client.get(url).status_code == 401  # links of another secret
    # A keyless API signs nothing and makes no secret.
    secret.unlink()
    make_api().client.get("/v1/config")
    assert not secret.exists()


# --- Health ----------------------------------------------------------------------------------


def test_healthz_says_ok_or_not_and_nothing_else(tmp_path: Path) -> None:
    """A merchant learns whether the API works, not the Redis address nor a folder of ours."""
    settings = load_settings(data_dir=tmp_path, api={"keys": KEYS, "ops_keys": [OPS_KEY]})
    store = JobStore.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    client = TestClient(create_app(settings, store=store, broker=StubBroker()), base_url=LOCAL)
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json() == {"status": "unavailable", "redis": "unavailable"}
    assert client.get("/v1/ops/health", headers=AUTH_A).status_code == 401  # a merchant key
    detail = client.get("/v1/ops/health", headers={"Authorization": f"Bearer {OPS_KEY}"})
    assert detail.status_code == 503
    body = detail.json()
    assert body["status"] == "unavailable" and "127.0.0.1:1" in body["redis"]
    assert body["data_dir"] == str(tmp_path)
    client.close()
