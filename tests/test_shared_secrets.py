"""Client secrets shared by voice servers through a real Redis (``voice.client_secret_store``):
a page mints on one server and its browser connects to another, the secret still works once
across all of them, and a store that cannot be reached is a clear 503, never a crash."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from openai import InternalServerError

from tests.test_client_secrets import KEY, PIRATE, _sdk
from voice.runtime.server import key_id
from voice.testing.harness import fake_engines, serving

pytestmark = pytest.mark.redis


async def _session_config(port: int, secret: str, opened: Any = None) -> dict[str, Any]:
    """The bound configuration a session opened with ``secret`` reports; ``opened()`` is
    called while it is open."""
    async with _sdk(port, secret).realtime.connect(model="castwork") as conn:
        async for event in conn:
            if event.type == "session.updated":
                if opened is not None:
                    opened()
                return event.to_dict()["session"]
    raise AssertionError("no session.updated")


async def test_a_secret_minted_on_one_server_opens_a_session_on_another(
    tmp_path: Any, redis_url: str
) -> None:
    shared: dict[str, Any] = {"voice": {"api_keys": [KEY], "client_secret_store": redis_url}}
    async with (
        serving(tmp_path / "a", fake_engines(), **shared) as (_, port_a),
        serving(tmp_path / "b", fake_engines(), **shared) as (b, port_b),
    ):
        minted = await _sdk(port_a).realtime.client_secrets.create(
            session={"type": "realtime", "instructions": PIRATE}
        )
        counted: list[int] = []
        session = await _session_config(
            port_b, minted.value, lambda: counted.append(b.sessions[key_id(f"Bearer {KEY}")])
        )
        assert session["instructions"] == PIRATE  # the binding travelled with it
        assert counted == [1]  # under the key that minted it, on the server it reached
        # Spent everywhere: neither server opens it again.
        for port in (port_a, port_b):
            with pytest.raises(Exception, match="401"):
                await _session_config(port, minted.value)
        # Redis holds a digest, not the secret itself.
        import redis

        with redis.Redis.from_url(redis_url) as r:
            assert not any(minted.value.encode() in k for k in r.keys("*"))

        # A server with its own memory knows nothing of the shared secrets.
        async with serving(tmp_path / "c", fake_engines(), voice={"api_keys": [KEY]}) as (_, c):
            other = await _sdk(port_a).realtime.client_secrets.create()
            with pytest.raises(Exception, match="401"):
                await _session_config(c, other.value)


async def test_an_unreachable_store_is_a_clear_503(tmp_path: Any) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    options: dict[str, Any] = {"voice": {"api_keys": [KEY], "client_secret_store": dead}}
    async with serving(tmp_path, fake_engines(), **options) as (_, port):
        with pytest.raises(InternalServerError) as minting:
            await _sdk(port).realtime.client_secrets.create()
        assert minting.value.status_code == 503
        assert "client secret store" in str(minting.value) and "unreachable" in str(minting.value)
        async with httpx.AsyncClient() as http:
            r = await http.get(
                f"http://127.0.0.1:{port}/v1/realtime",
                headers={
                    "Authorization": "Bearer ek_" + "x" * 43,
                    "Connection": "Upgrade",
                    "Upgrade": "websocket",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "Sec-WebSocket-Version": "13",
                },
            )
            assert r.status_code == 503 and "unreachable" in r.text
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).text == "ok\n"
