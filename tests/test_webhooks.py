"""Signed webhooks when a job ends: which URLs are called, the outbox that cannot lose a
finished job's announcement, and deliveries to a real HTTP receiver that verifies each one
with the Standard Webhooks library, retried with backoff by a real dramatiq worker on Redis
until the receiver takes it, every attempt in the job's delivery log and view."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook

from media.pipeline import NarrationEngines
from tests.ad_helpers import wait_for
from workers.actors import WEBHOOK, Context, declare, enqueue
from workers.api import create_app
from workers.broker import make_broker
from workers.settings import Settings, load_settings
from workers.storage import open_storage
from workers.store import JobStore
from workers.webhooks.delivery import deliveries, merchant_secret
from workers.webhooks.outbox import WebhookRelay
from workers.webhooks.targets import WebhookRefused, check_url

pytestmark = pytest.mark.redis

MANIFEST = {
    "outputs": [{"format": "1:1", "video": "ad-1x1-abc.mp4", "thumbnail": "thumb-1x1.jpg"}],
    "preview": "preview.mp4",
}


def test_only_public_http_urls_are_called() -> None:
    for url in (
        "ftp://example.com/hook",
        "https://user:pw@example.com/hook",
        "not a url",
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://[::1]/hook",
        "http://no-such-host.invalid/hook",
    ):
        with pytest.raises(WebhookRefused) as refused:
            check_url(url, allow_private=False)
        assert refused.value.fields["field"] == "webhook_url" and not refused.value.transient
    assert check_url("http://127.0.0.1:9/hook", allow_private=True)  # a setting opens it


class Receiver:
    """A real HTTP endpoint on loopback that answers the scripted statuses in turn (then
    200) and keeps every request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.got: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/castwork"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])  # the first attempt fails: the queue must try again
    yield r
    r.close()


def _settings(redis_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        broker={"url": redis_url},
        jobs={"dir": tmp_path / "jobs"},
        webhooks={"allow_private": True, "min_backoff_ms": 50, "max_backoff_ms": 100},
        api={"keys": {"hooks": "hooks-merchant-key-0123"}},
    )


def test_a_finished_job_is_announced_signed_and_retried_until_taken(
    redis_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    settings = _settings(redis_url, tmp_path)
    store = JobStore.from_url(redis_url)
    broker = make_broker(settings)
    declare(Context(settings, store, broker, NarrationEngines(settings), open_storage(settings)))
    relay = WebhookRelay(store, lambda job_id, status: enqueue(broker, WEBHOOK, job_id, status))
    store.r.delete(store.outbox, relay.processing)
    job_id = store.new_id()
    store.create(job_id, "hooks", template="sale", formats=["1:1"], fields={},
                 webhook_url=receiver.url)  # fmt: skip
    plain = store.new_id()
    store.create(plain, "hooks", template="sale", formats=["1:1"], fields={})
    # Finishing puts the job in the outbox in the same step; a job without a webhook, not.
    assert store.finish(job_id, MANIFEST) and store.finish(plain, MANIFEST)
    assert store.r.lrange(store.outbox, 0, -1) == [f"{job_id} done".encode()]
    assert not store.finish(job_id, MANIFEST)  # finished once, announced once
    assert relay.relay_one(1) and not relay.relay_one(0)
    assert store.r.llen(relay.processing) == 0
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: len(receiver.got) == 2, 30, "a second attempt")
        wait_for(lambda: len(deliveries(store, job_id)) == 2, 10, "two logged attempts")
    finally:
        worker.stop()
        broker.close()
    secret = merchant_secret(store, "hooks")
    assert secret.startswith("whsec_")
    _, second = receiver.got
    for headers, body in receiver.got:  # each attempt verifies, with one id
        event = Webhook(secret).verify(body, headers)
        assert event["type"] == "job.done" and event["data"]["id"] == job_id
        assert headers["webhook-id"] == f"{job_id}-done"
    assert json.loads(second[1])["data"]["files"] == ["1x1.mp4", "preview.mp4", "thumb-1x1.jpg"]
    with pytest.raises(Exception, match="signature"):  # another secret does not verify
        Webhook("whsec_" + "A" * 32).verify(second[1], second[0])
    log = deliveries(store, job_id)
    assert [(d["attempt"], d["ok"], d["status_code"]) for d in log] == [
        (1, False, 500),
        (2, True, 200),
    ]

    # The merchant sees it in the job view, and reads the secret with its key.
    app = create_app(settings, store=store, broker=make_broker(settings))
    client = TestClient(app, base_url="http://127.0.0.1",
                        headers={"Authorization": "Bearer hooks-merchant-key-0123"})  # fmt: skip
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["webhook"]["url"] == receiver.url and len(view["webhook"]["deliveries"]) == 2
    assert client.get("/v1/webhooks/secret").json() == {"secret": secret}


def test_the_outbox_keeps_what_a_stopped_relay_held(redis_url: str, tmp_path: Path) -> None:
    store = JobStore.from_url(redis_url)
    sent: list[tuple[str, str]] = []
    relay = WebhookRelay(store, lambda job_id, status: sent.append((job_id, status)))
    store.r.delete(store.outbox, relay.processing)
    job_id = store.new_id()
    store.create(job_id, "hooks", template="sale", formats=["1:1"], fields={},
                 webhook_url="https://example.com/hook")  # fmt: skip
    assert store.cancel(job_id)
    # A process died holding the entry (moved, never sent): the next one puts it back.
    store.r.lmove(store.outbox, relay.processing, "LEFT", "RIGHT")
    assert relay.recover() == 1
    assert relay.relay_one(1) and sent == [(job_id, "cancelled")]

    def refuse(job_id: str, status: str) -> None:
        raise ConnectionError("broker down")

    # The queue refuses it: back in the outbox, not lost.
    store.r.rpush(store.outbox, f"{job_id} cancelled")
    with pytest.raises(ConnectionError):
        WebhookRelay(store, refuse).relay_one(1)
    assert store.r.lrange(store.outbox, 0, -1) == [f"{job_id} cancelled".encode()]
    assert store.r.llen(relay.processing) == 0
    store.r.delete(store.outbox)


def test_the_api_refuses_an_internal_webhook(redis_url: str, tmp_path: Path) -> None:
    settings = load_settings(broker={"url": redis_url}, jobs={"dir": tmp_path / "jobs"})
    app = create_app(settings, store=JobStore.from_url(redis_url), broker=make_broker(settings))
    client = TestClient(app, base_url="http://127.0.0.1", headers={"X-Castwork-CSRF": "1"})
    from tests.ad_helpers import photo_bytes

    files = [("images", ("p.jpg", photo_bytes("coffee", 300), "image/jpeg"))]
    data = {"headline": "Hooks", "formats": "1:1", "webhook_url": "http://10.0.0.8/hook"}
    r = client.post("/v1/jobs", data=data, files=files)
    assert r.status_code == 422, r.text
    assert (
        r.json()["error"]["field"] == "webhook_url" and "internal" in r.json()["error"]["message"]
    )
