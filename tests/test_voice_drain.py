"""Behind a load balancer: readiness says whether a seat is free, and a stopping server drains
(no new sessions, the open ones finish, the rest are closed with 1012)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from voice.clients.realtime import RealtimeClient
from voice.runtime.server import VoiceServer
from voice.testing.harness import fake_engines, serving, utterance


@contextlib.asynccontextmanager
async def two_seats(tmp_path: Path) -> AsyncIterator[tuple[VoiceServer, str]]:
    async with serving(tmp_path, fake_engines(), voice={"max_sessions": 2}) as (server, port):
        yield server, f"127.0.0.1:{port}"


async def ready(address: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{address}/readyz", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    return await asyncio.to_thread(get)


async def test_readiness_follows_the_free_seats(tmp_path: Path) -> None:
    async with two_seats(tmp_path) as (_, address):
        assert await ready(address) == (200, "ready: 2 of 2 seats free\n")
        a = await RealtimeClient.open(f"ws://{address}/v1/realtime")
        b = await RealtimeClient.open(f"ws://{address}/v1/realtime")
        assert await ready(address) == (503, "full: 2 of 2 sessions\n")
        await a.close()
        await b.close()
        await asyncio.sleep(0.2)
        assert (await ready(address))[0] == 200


async def test_a_draining_server_takes_no_one_new_and_lets_its_callers_finish(
    tmp_path: Path,
) -> None:
    async with two_seats(tmp_path) as (server, address):
        url = f"ws://{address}/v1/realtime"
        caller = await RealtimeClient.open(url)
        drain = asyncio.create_task(server.drain(30.0))
        await asyncio.sleep(0.1)
        assert await ready(address) == (503, "draining: 1 sessions finishing\n")
        with pytest.raises(InvalidStatus) as refused:
            await RealtimeClient.open(url)
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "1"
        # The open call goes on: a whole turn is answered during the drain.
        await caller.stream(utterance(), 16_000, realtime=False)
        done = await caller.wait_for_answer(timeout=20)
        assert done["response"]["status"] == "completed"
        await caller.close()
        await asyncio.wait_for(drain, 5)  # the last caller left: the drain ends at once


async def test_callers_still_there_when_the_drain_ends_are_told_to_reconnect(
    tmp_path: Path,
) -> None:
    async with two_seats(tmp_path) as (server, address):
        caller = await RealtimeClient.open(f"ws://{address}/v1/realtime")
        hurry = asyncio.Event()
        drain = asyncio.create_task(server.drain(30.0, hurry))
        await asyncio.sleep(0.2)
        assert not drain.done()
        hurry.set()  # a second SIGTERM: no more waiting
        await asyncio.wait_for(drain, 5)
        await asyncio.wait_for(caller.ws.wait_closed(), 5)
        assert caller.ws.close_code == 1012
        assert caller.ws.close_reason == "server restarting; connect again"
