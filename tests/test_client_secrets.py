"""Client secrets for browsers (GA ``POST /v1/realtime/client_secrets``) on the voice server's
own port: minted with a server key through the official openai SDK, used once (as the bearer
token, or in the subprotocol list as browsers must), the bound session applied, expired and
reused secrets refused with a clear error, and a secret unable to mint more."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from openai import AsyncOpenAI, AuthenticationError, BadRequestError

from voice.runtime.client_secrets import (
    ClientSecrets,
    SecretRefused,
    SecretStore,
    presented_secret,
)
from voice.runtime.server import key_id
from voice.runtime.shared_secrets import RedisSecrets
from voice.testing.harness import fake_engines, serving

KEY = "server-key-0123456789"
PIRATE = "You are a pirate. Answer like one."


def _sdk(port: int, key: str = KEY) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=key,
        base_url=f"http://127.0.0.1:{port}/v1",
        websocket_base_url=f"ws://127.0.0.1:{port}/v1",
        max_retries=0,
    )


async def _first_events(conn: Any, n: int) -> list[dict[str, Any]]:
    events = []
    async for event in conn:
        events.append(event.to_dict())
        if len(events) == n:
            break
    return events


async def test_a_secret_opens_one_session_with_the_bound_configuration(tmp_path: Path) -> None:
    async with serving(tmp_path, fake_engines(), voice={"api_keys": [KEY]}) as (server, port):
        minted = await _sdk(port).realtime.client_secrets.create(
            session={"type": "realtime", "instructions": PIRATE},
            expires_after={"anchor": "created_at", "seconds": 30},
        )
        assert minted.value.startswith("ek_") and len(minted.value) > 40
        assert time.time() + 25 < minted.expires_at <= time.time() + 31
        assert minted.session.instructions == PIRATE  # type: ignore[union-attr]

        # The browser's side: the secret only, never the server key.
        async with _sdk(port, minted.value).realtime.connect(model="castwork") as conn:
            created, updated = await _first_events(conn, 2)
            assert created["type"] == "session.created"
            assert updated["type"] == "session.updated"
            assert updated["session"]["instructions"] == PIRATE
            # Counted (and logged) under the key that minted the secret.
            assert server.sessions[key_id(f"Bearer {KEY}")] == 1
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello"}],
                }
            )
            await conn.response.create()
            async for event in conn:
                if event.type == "response.done":
                    assert event.response.status == "completed"
                    break

        # Used: refused, with a message that says what to do.
        with pytest.raises(Exception) as used:
            async with _sdk(port, minted.value).realtime.connect(model="castwork") as conn:
                await _first_events(conn, 1)
        assert "401" in str(used.value)
        async with httpx.AsyncClient() as http:  # the same refusal, its text in plain view
            r = await http.get(
                f"http://127.0.0.1:{port}/v1/realtime",
                headers={"Authorization": f"Bearer {minted.value}", **_upgrade()},
            )
        assert r.status_code == 401 and "unknown, used or expired" in r.text


def _upgrade() -> dict[str, str]:
    return {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }


async def test_a_browser_presents_its_secret_as_a_subprotocol(tmp_path: Path) -> None:
    async with serving(tmp_path, fake_engines(), voice={"api_keys": [KEY]}) as (_, port):
        minted = await _sdk(port).realtime.client_secrets.create(session={"type": "realtime"})
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        # What `new WebSocket(url, ["realtime", "openai-insecure-api-key." + secret])` sends
        # from a page on this machine: no Authorization header, an Origin.
        async with websockets.connect(
            url,
            subprotocols=["realtime", f"openai-insecure-api-key.{minted.value}"],  # type: ignore[list-item]
            origin="http://127.0.0.1:8000",  # type: ignore[arg-type]
        ) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "session.created"
        # Without a secret or key the subprotocol opens nothing.
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, subprotocols=["realtime"]):  # type: ignore[list-item]
                pass
        assert refused.value.response.status_code == 401


async def test_expired_secrets_and_secrets_as_keys_are_refused(tmp_path: Path) -> None:
    async with serving(tmp_path, fake_engines(), voice={"api_keys": [KEY]}) as (server, port):
        stale = await server.client_secrets.mint("key-test", 10, {}, now=time.time() - 11)
        with pytest.raises(Exception) as expired:
            async with _sdk(port, stale.value).realtime.connect(model="castwork") as conn:
                await _first_events(conn, 1)
        assert "401" in str(expired.value)

        minted = await _sdk(port).realtime.client_secrets.create()
        with pytest.raises(AuthenticationError, match="server API key is required"):
            await _sdk(port, minted.value).realtime.client_secrets.create()
        with pytest.raises(AuthenticationError):
            await _sdk(port, "not-a-key").realtime.client_secrets.create()
        # A secret opens a session, nothing else: not the metrics.
        async with httpx.AsyncClient() as http:
            r = await http.get(
                f"http://127.0.0.1:{port}/metrics",
                headers={"Authorization": f"Bearer {minted.value}"},
            )
        assert r.status_code == 401


async def test_bad_requests_for_secrets_say_what_is_wrong(tmp_path: Path) -> None:
    options = {"voice": {"api_keys": [KEY], "max_client_secrets": 2}}
    async with serving(tmp_path, fake_engines(), **options) as (_, port):
        sdk = _sdk(port)
        with pytest.raises(BadRequestError, match=r"expires_after\.seconds"):
            await sdk.realtime.client_secrets.create(
                expires_after={"anchor": "created_at", "seconds": 3600}
            )
        with pytest.raises(BadRequestError, match="session"):
            await sdk.realtime.client_secrets.create(
                session={"type": "realtime", "output_modalities": ["video"]}  # type: ignore[list-item]
            )
        base = f"http://127.0.0.1:{port}/v1/realtime/client_secrets"
        auth = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient() as http:
            for body, status, says in (
                (b"{not json", 400, "body"),
                (b'{"sesion": {}}', 400, "sesion"),
                (b'{"session": {"type": "transcription"}}', 400, "only realtime"),
                (b"x" * (70 << 10), 413, "too large"),
            ):
                r = await http.post(base, content=body, headers=auth)
                assert r.status_code == status and says in r.text, (body[:20], r.text)
            nope = await http.post(base.replace("client_secrets", "nope"), headers=auth)
            assert nope.status_code == 404
            # A page of another site cannot mint.
            foreign = {**auth, "Origin": "https://evil.example"}
            assert (await http.post(base, content=b"{}", headers=foreign)).status_code == 403
            # Bounded: past voice.max_client_secrets outstanding, 429 until some are used.
            for _ in range(2):
                assert (await http.post(base, content=b"{}", headers=auth)).status_code == 200
            full = await http.post(base, content=b"{}", headers=auth)
            assert full.status_code == 429
            assert full.json()["error"]["type"] == "rate_limit_exceeded"
            # The WebSocket side of the port is untouched by all this.
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).text == "ok\n"


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SecretStore]:
    """Each store, capacity 2: this server's memory, and a real Redis (a fresh namespace)."""
    if request.param == "memory":
        made: SecretStore = ClientSecrets(capacity=2)
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisSecrets(url, capacity=2, namespace=f"test:{uuid.uuid4().hex}")
    yield made
    await made.aclose()


async def test_secrets_expire_are_single_use_and_bounded(store: SecretStore) -> None:
    a = await store.mint("key-a", 60, {"instructions": "x"}, now=1000.0)
    assert (a.key, a.expires_at, a.session) == ("key-a", 1060.0, {"instructions": "x"})
    assert await store.redeem(a.value, now=1059.0) == a
    with pytest.raises(SecretRefused) as again:
        await store.redeem(a.value, now=1059.0)
    assert again.value.status == 401
    b = await store.mint("key-a", 10, {}, now=1000.0)
    with pytest.raises(SecretRefused):
        await store.redeem(b.value, now=1010.0)  # at its expiry: gone
    await store.mint("key-a", 10, {}, now=2000.0)
    await store.mint("key-a", 10, {}, now=2000.0)
    with pytest.raises(SecretRefused) as full:
        await store.mint("key-a", 10, {}, now=2000.0)
    assert full.value.status == 429
    await store.mint("key-a", 10, {}, now=2011.0)  # the expired ones made room
    await store.mint("key-a", 10, {}, now=2011.0)
    with pytest.raises(SecretRefused):  # and no more than they held
        await store.mint("key-a", 10, {}, now=2011.0)
    assert presented_secret("Bearer ek_abc", None) == "ek_abc"
    assert presented_secret("Bearer sk-real", "realtime, openai-insecure-api-key.ek_x") == "ek_x"
    assert presented_secret(None, "realtime") is None


async def test_a_client_that_expects_100_continue_is_told_to_send_its_body(
    tmp_path: Path,
) -> None:
    import asyncio

    async with serving(tmp_path, fake_engines(), voice={"api_keys": [KEY]}) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"session": {"type": "realtime", "instructions": "x" * 2000}}).encode()
        writer.write(
            b"POST /v1/realtime/client_secrets HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert interim.startswith(b"HTTP/1.1 100 ")  # at once, not after curl's 1 s wait
        writer.write(body)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"value": "ek_' in answer
