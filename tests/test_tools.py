"""Server-side tools against real servers on loopback: an HTTP tool endpoint (uvicorn in a
thread) that answers, hangs, fails, redirects or never stops talking, and the example
order-status MCP server (examples/order_status), spawned over stdio by the MCP SDK and
served over streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from base.errors import ConfigError
from examples.order_status import http_tool
from voice.errors import ToolArgumentsError, ToolError, ToolTimeout
from voice.settings import HttpToolSettings, McpServerSettings, ToolSettings
from voice.tools import ToolBox
from workers.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
ORDER_ID = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}},
    "required": ["order_id"],
}
A100 = "Order A100 is shipped: it left the warehouse on Monday and arrives Thursday."


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Seen:
    """What reached a server: (path, headers, body) per request, in the order they arrived."""

    requests: list[tuple[str, dict[str, str], bytearray]] = field(default_factory=list)


def _recording(app: ASGIApp, seen: Seen) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        # Noted on arrival, not when the handler ends: a request a client gave up on (a hung
        # endpoint) must not turn up later in another test's list.
        body = bytearray()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        seen.requests.append((scope["path"], headers, body))

        async def recv() -> Any:
            message = await receive()
            body.extend(message.get("body", b""))
            return message

        await app(scope, recv, send)

    return wrapped


def _fault_app() -> Starlette:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(30)
        return PlainTextResponse("too late")

    async def boom(request: Request) -> Response:
        return PlainTextResponse("Traceback: secret internals", status_code=500)

    async def endless(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(2000):  # 128 MB if nobody stops reading
                yield b"x" * 65_536

        return StreamingResponse(body())

    async def declared(request: Request) -> Response:
        return Response(b"y" * 10_000)

    async def long(request: Request) -> Response:
        return PlainTextResponse("z" * 5_000)

    async def moved(request: Request) -> Response:
        return RedirectResponse("/order_status", status_code=307)

    routes = [
        Route("/order_status", http_tool.order_status, methods=["POST"]),
        *(
            Route(f"/{f.__name__}", f, methods=["POST"])
            for f in (slow, boom, endless, declared, long, moved)
        ),
    ]
    return Starlette(routes=routes)


@contextmanager
def serving(app: ASGIApp, *, lifespan: str = "off") -> Iterator[str]:
    """uvicorn serving ``app`` on a free loopback port, in a thread; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="critical", log_config=None, lifespan=lifespan
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tool-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = server.force_exit = True  # a hung request must not hold it
        thread.join(15)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    with serving(_recording(_fault_app(), seen)) as url:
        yield url, seen


def http_settings(base: str, path: str, **kw: Any) -> ToolSettings:
    tool = HttpToolSettings(name="order_lookup", url=f"{base}/{path}", parameters=ORDER_ID, **kw)
    return ToolSettings(http=[tool])


def stdio_server(pidfile: Path, **kw: Any) -> McpServerSettings:
    """The example MCP server over stdio, through a shell that notes its pid and then
    becomes the server (exec), so that a test can kill it."""
    run = f'echo $$ > {pidfile}; exec "$0" -m examples.order_status.mcp_server'
    return McpServerSettings(
        label="orders", command=["sh", "-c", run, sys.executable], cwd=ROOT, **kw
    )


# --- HTTP tools ------------------------------------------------------------------------------


async def test_an_http_tool_posts_the_arguments_and_answers_with_the_body(
    endpoint: tuple[str, Seen],
) -> None:
    base, seen = endpoint
    seen.requests.clear()
    settings = http_settings(base, "order_status", headers={"Authorization": "Bearer s3cret"})
    box = await ToolBox.start(settings)
    try:
        (spec,) = box.specs()
        assert spec.name == "order_lookup" and spec.parameters == ORDER_ID
        tool = box.get("order_lookup")
        assert tool is not None and tool.side_effects and tool.timeout_s == 10.0
        assert await box.run("order_lookup", '{"order_id": "a100"}') == A100
        with pytest.raises(ToolError, match="HTTP 404: there is no order 'Z9'") as err:
            await box.run("order_lookup", '{"order_id": "Z9"}')
        assert err.value.code == "tool_error" and not err.value.transient
    finally:
        await box.aclose()
    path, headers, body = seen.requests[0]
    assert path == "/order_status" and json.loads(body) == {"order_id": "a100"}
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["content-type"] == "application/json"


@pytest.mark.reliability("fault", "HTTP tool endpoint that hangs: the call ends in tool_timeout")
async def test_a_hanging_http_tool_times_out(endpoint: tuple[str, Seen]) -> None:
    box = await ToolBox.start(http_settings(endpoint[0], "slow", timeout_s=0.5))
    t0 = time.monotonic()
    with pytest.raises(ToolTimeout, match=r"did not answer within 0\.5 s") as err:
        await box.run("order_lookup", '{"order_id": "A100"}')
    assert time.monotonic() - t0 < 5
    assert err.value.code == "tool_timeout" and err.value.transient
    await box.aclose()


@pytest.mark.reliability("fault", "HTTP tool endpoint answers 500: tool_error, internals unsaid")
async def test_a_failing_http_tool_is_a_transient_error(endpoint: tuple[str, Seen]) -> None:
    box = await ToolBox.start(http_settings(endpoint[0], "boom"))
    with pytest.raises(ToolError) as err:
        await box.run("order_lookup", '{"order_id": "A100"}')
    await box.aclose()
    assert str(err.value) == "order_lookup failed with HTTP 500"  # no traceback for the model
    assert err.value.code == "tool_error" and err.value.transient
    assert err.value.fields["status"] == 500


@pytest.mark.reliability(
    "fault", "HTTP tool endpoint with an oversized ({path}) body: refused at the cap"
)
@pytest.mark.parametrize("path", ["endless", "declared"])
async def test_an_oversized_answer_is_refused_at_the_cap(
    endpoint: tuple[str, Seen], path: str
) -> None:
    box = await ToolBox.start(http_settings(endpoint[0], path, max_response_bytes=4096))
    t0 = time.monotonic()
    with pytest.raises(ToolError, match="answered more than 4096 bytes") as err:
        await box.run("order_lookup", '{"order_id": "A100"}')
    assert time.monotonic() - t0 < 5  # stopped reading; did not take the 128 MB
    assert not err.value.transient
    await box.aclose()


async def test_a_long_output_is_cut_with_a_note(endpoint: tuple[str, Seen]) -> None:
    settings = http_settings(endpoint[0], "long").model_copy(update={"max_output_chars": 100})
    box = await ToolBox.start(settings)
    output = await box.run("order_lookup", '{"order_id": "A100"}')
    await box.aclose()
    assert output == "z" * 100 + " [cut: 4900 more characters]"


@pytest.mark.reliability("input", "HTTP tool endpoint that redirects elsewhere: not followed")
async def test_a_redirect_is_not_followed(endpoint: tuple[str, Seen]) -> None:
    base, seen = endpoint
    seen.requests.clear()
    box = await ToolBox.start(http_settings(base, "moved"))
    with pytest.raises(ToolError, match="HTTP 307"):
        await box.run("order_lookup", '{"order_id": "A100"}')
    await box.aclose()
    # The redirect's target was never asked. (Not an exact list: a request of the test before,
    # which stopped reading at the size cap, may be recorded late, when its handler ends.)
    paths = [path for path, _, _ in seen.requests]
    assert "/moved" in paths and "/order_status" not in paths


@pytest.mark.reliability(
    "input", "tool arguments not JSON, not an object or against the schema: refused, no request"
)
async def test_bad_arguments_are_refused_before_any_request(endpoint: tuple[str, Seen]) -> None:
    base, seen = endpoint
    seen.requests.clear()
    box = await ToolBox.start(http_settings(base, "order_status"))
    bad = {
        '{"order_id": ': "are not valid JSON (Expecting value at character 12)",
        "[1, 2]": "must be a JSON object, not list",
        '{"order_id": NaN}': "are not valid JSON (NaN is not a JSON number)",
        "{}": "arguments for order_lookup: 'order_id' is a required property",
        '{"order_id": 5}': "arguments for order_lookup.order_id: 5 is not of type 'string'",
        "[" * 100_000: "are not valid JSON",
    }
    for arguments, message in bad.items():
        with pytest.raises(ToolArgumentsError) as err:
            await box.run("order_lookup", arguments)
        assert message in str(err.value) and len(str(err.value)) <= 200
        assert err.value.code == "tool_invalid_arguments" and not err.value.transient
    with pytest.raises(ToolError, match="there is no tool named 'cancel_everything'"):
        await box.run("cancel_everything", "{}")
    await box.aclose()
    assert seen.requests == []


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ({"http": [{"name": "order lookup", "url": "http://h/"}]}, "should match pattern"),
        ({"http": [{"name": "t", "url": "file:///etc/passwd"}]}, "URL scheme should be"),
        ({"http": [{"name": "t", "url": "http://h/", "parameters": {"type": 5}}]}, "JSON Schema"),
        ({"http": [{"name": "t", "url": "http://h/", "parameters": {"type": "array"}}]}, "object"),
        ({"http": [{"name": "t", "url": "http://a/"}, {"name": "t", "url": "http://b/"}]}, "twice"),
        ({"mcp": [{"label": "x"}]}, "needs a command"),
        ({"mcp": [{"label": "x", "transport": "http"}]}, "needs a url"),
        ({"mcp": [{"label": "x", "command": ["s"], "url": "http://h/mcp"}]}, "url and headers"),
    ],
)
@pytest.mark.reliability("input", "a wrong tools setting ({message}): refused at start-up")
def test_bad_tool_settings_are_refused(tools: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_settings(tools=tools)
    assert err.value.setting.startswith("tools")


# --- MCP servers -----------------------------------------------------------------------------


def _pid(pidfile: Path) -> int:
    return int(pidfile.read_text())


def _gone(pid: int) -> bool:
    """Whether the process exited (a zombie not yet reaped counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        await asyncio.sleep(0.05)


async def test_an_mcp_server_over_stdio(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    box = await ToolBox.start(ToolSettings(mcp=[stdio_server(pidfile)]))
    try:
        assert [s.name for s in box.specs()] == ["get_order_status", "cancel_order"]
        lookup, cancel = box.get("get_order_status"), box.get("cancel_order")
        assert lookup is not None and cancel is not None
        # readOnlyHint: true -> no side effects; no annotation -> side effects.
        assert (lookup.side_effects, cancel.side_effects) == (False, True)
        assert lookup.server_label == "orders" and lookup.timeout_s == 10.0
        assert lookup.spec.parameters["required"] == ["order_id"]
        assert "by its number" in lookup.spec.description

        assert await box.run("get_order_status", '{"order_id": "A100"}') == A100
        with pytest.raises(ToolError, match="A100 is already shipped, too late") as err:
            await box.run("cancel_order", '{"order_id": "A100"}')  # the tool's isError
        assert err.value.code == "tool_error" and not err.value.transient
        assert err.value.fields["server"] == "orders"
        assert await box.run("cancel_order", '{"order_id": "A101"}') == "Order A101 is cancelled."
    finally:
        await box.aclose()
    await _wait_gone(_pid(pidfile))  # closing stops the server process


# A server whose one tool waits as long as it is told, and first touches a file (so that a
# test knows the call is under way).
SLOW_SERVER = """
import sys
from pathlib import Path

import anyio
from mcp.server import MCPServer

server = MCPServer("slow", log_level="WARNING")


@server.tool()
async def wait(seconds: float, started: str = "") -> str:
    \"\"\"Wait, then say so.\"\"\"
    if started:
        Path(started).touch()
    await anyio.sleep(seconds)
    return f"waited {seconds:g} s"


server.run()
"""


@pytest.mark.reliability(
    "fault", "MCP tool that hangs, then its server killed mid-call: clear errors, then restarted"
)
async def test_a_hanging_or_killed_mcp_server(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_SERVER)
    pidfile, started = tmp_path / "pid", tmp_path / "started"
    run = f'echo $$ > {pidfile}; exec "$0" {tmp_path / "slow.py"}'
    server = McpServerSettings(label="slow", command=["sh", "-c", run, sys.executable], timeout_s=2)
    box = await ToolBox.start(ToolSettings(mcp=[server]))
    try:
        with pytest.raises(ToolTimeout, match="wait did not answer within 2 s"):
            await box.run("wait", '{"seconds": 60}')
        assert await box.run("wait", '{"seconds": 0}') == "waited 0 s"  # the session goes on

        call = asyncio.create_task(
            box.run("wait", json.dumps({"seconds": 60, "started": str(started)}))
        )
        while not started.exists():
            assert not call.done(), call
            await asyncio.sleep(0.01)
        first = _pid(pidfile)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ToolError, match="the slow tool server stopped during the call") as err:
            await call
        assert err.value.code == "tool_error" and err.value.transient
        await _wait_gone(first)
        # The server is started again; a call before it is up may time out (transient).
        deadline = time.monotonic() + 30
        while True:
            try:
                assert await box.run("wait", '{"seconds": 0}') == "waited 0 s"
                break
            except ToolTimeout:
                assert time.monotonic() < deadline, "the server did not come back"
        assert _pid(pidfile) != first
    finally:
        await box.aclose()


async def test_mcp_allow_list_and_side_effect_override(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = stdio_server(
        tmp_path / "pid", tools=["cancel_order"], side_effects={"cancel_order": False, "nope": True}
    )
    box = await ToolBox.start(ToolSettings(mcp=[server]))
    await box.aclose()
    assert box.names() == ["cancel_order"]
    tool = box.get("cancel_order")
    assert tool is not None and not tool.side_effects
    assert "does not offer 'nope'" in caplog.text


async def test_an_mcp_server_over_streamable_http() -> None:
    from examples.order_status.mcp_server import mcp

    seen = Seen()
    with serving(_recording(mcp.streamable_http_app(), seen), lifespan="on") as base:
        server = McpServerSettings(
            label="orders-http",
            transport="http",
            url=f"{base}/mcp",
            headers={"Authorization": "Bearer s3cret"},
        )
        box = await ToolBox.start(ToolSettings(mcp=[server]))
        try:
            assert box.names() == ["get_order_status", "cancel_order"]
            assert await box.run("get_order_status", '{"order_id": "A100"}') == A100
            with pytest.raises(ToolError, match="no order 'Z9'"):
                await box.run("get_order_status", '{"order_id": "Z9"}')
        finally:
            await box.aclose()
    assert seen.requests and all(
        headers.get("authorization") == "Bearer s3cret" for _, headers, _ in seen.requests
    )


@pytest.mark.reliability("fault", "MCP server that cannot start: left out, the other tools start")
async def test_an_mcp_server_that_cannot_start_is_left_out(
    endpoint: tuple[str, Seen], caplog: pytest.LogCaptureFixture
) -> None:
    with serving(Starlette()) as base:  # a port that is surely closed once this ends
        closed = f"{base}/mcp"
    broken = [
        McpServerSettings(label="missing", command=["/nonexistent/mcp-server"]),
        McpServerSettings(label="quits", command=[sys.executable, "-c", "pass"]),
        McpServerSettings(label="refused", transport="http", url=closed, connect_timeout_s=5),
    ]
    settings = http_settings(endpoint[0], "order_status").model_copy(update={"mcp": broken})
    with caplog.at_level(logging.WARNING, logger="voice.tools"):
        box = await ToolBox.start(settings)
    await box.aclose()
    assert box.names() == ["order_lookup"]
    for label in ("missing", "quits", "refused"):
        assert (
            f"mcp server {label} left out: MCP server {label!r} could not be started" in caplog.text
        )


async def test_two_tools_with_one_name_are_refused(
    endpoint: tuple[str, Seen], tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    http = HttpToolSettings(name="get_order_status", url=f"{endpoint[0]}/order_status")
    settings = ToolSettings(http=[http], mcp=[stdio_server(pidfile)])
    with pytest.raises(ConfigError, match="two tools are named 'get_order_status'") as err:
        await ToolBox.start(settings)
    assert f"the http tool at {endpoint[0]} and MCP server 'orders'" in str(err.value)
    await _wait_gone(_pid(pidfile))  # the server it started was stopped
