"""Two voice servers behind the shipped HAProxy configuration (deploy/haproxy.cfg), on loopback:
the balancer admits twice one server's sessions, skips a full server, and sends new callers of
a draining server to the other."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from voice.clients.realtime import RealtimeClient, SessionRefused
from voice.runtime.server import VoiceServer
from voice.testing.harness import fake_engines, serving

ROOT = Path(__file__).resolve().parents[1]
HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (./setup.sh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def haproxy(tmp_path: Path, ports: list[int]) -> Iterator[int]:
    """The shipped configuration, told these servers' addresses and a free port (by the
    environment variables it documents)."""
    front = _free_port()
    env = {
        **os.environ,
        "CASTWORK_LB_BIND": f"127.0.0.1:{front}",
        **{f"CASTWORK_VOICE{i}": f"127.0.0.1:{port}" for i, port in enumerate(ports, start=1)},
    }
    cfg = ROOT / "deploy" / "haproxy.cfg"
    assert HAPROXY is not None
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=out, stderr=out, env=env)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", front), 1):
                break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)
        yield front
    finally:
        proc.terminate()
        proc.wait(10)


async def settle() -> None:
    await asyncio.sleep(1.2)  # two health checks (every 500 ms)


@contextlib.asynccontextmanager
async def behind_haproxy(tmp_path: Path) -> AsyncIterator[tuple[VoiceServer, VoiceServer, str]]:
    """Two servers of one seat each, the balancer in front and healthy; its Realtime URL."""
    one_seat = {"voice": {"max_sessions": 1}}
    async with (
        serving(tmp_path / "a", fake_engines(), **one_seat) as (a, port_a),
        serving(tmp_path / "b", fake_engines(), **one_seat) as (b, port_b),
    ):
        with haproxy(tmp_path, [port_a, port_b]) as front:
            await settle()
            yield a, b, f"ws://127.0.0.1:{front}/v1/realtime"


async def test_two_servers_behind_haproxy_take_twice_the_sessions_and_drain(
    tmp_path: Path,
) -> None:
    async with behind_haproxy(tmp_path) as (a, b, url):
        first = await RealtimeClient.open(url)
        await settle()  # the server it reached is full now: marked down
        second = await RealtimeClient.open(url)
        assert sum(a.sessions.values()) == 1 and sum(b.sessions.values()) == 1
        await settle()
        # Both full: a third caller is refused with a clear status, not queued.
        with pytest.raises((InvalidStatus, SessionRefused)):
            await RealtimeClient.open(url)
        await first.close()
        await second.close()
        await settle()
        # One server drains with a caller still on it: new callers reach the other.
        keeper = await RealtimeClient.open(url)
        drained = a if sum(a.sessions.values()) else b
        other = b if drained is a else a
        drain = asyncio.create_task(drained.drain(30.0))
        await settle()
        newcomer = await RealtimeClient.open(url)
        assert sum(other.sessions.values()) == 1  # the new caller went to the other server
        assert sum(drained.sessions.values()) == 1  # the draining one kept its caller
        await keeper.close()
        await asyncio.wait_for(drain, 5)
        await newcomer.close()


async def test_callers_of_a_server_that_dies_reconnect_through_the_balancer(
    tmp_path: Path,
) -> None:
    async with behind_haproxy(tmp_path) as (a, b, url):
        caller = await RealtimeClient.open(url)
        dead, alive = (a, b) if sum(a.sessions.values()) else (b, a)
        # As a killed process: its listener gone, its sockets reset, no closing handshake.
        assert dead.listener is not None
        dead.listener.close(close_connections=False)
        for ws in list(dead.listener.connections):
            ws.transport.abort()
        await asyncio.wait_for(caller.ws.wait_closed(), 5)
        assert caller.ws.close_code == 1006  # the balancer cut it: nobody said goodbye
        again = await RealtimeClient.open(url)  # the next try lands on the live server
        assert sum(alive.sessions.values()) == 1
        await again.close()
