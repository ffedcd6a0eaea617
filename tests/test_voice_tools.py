"""Tools in live voice sessions: the client's function tools over the wire (GA events, a
function_call_output answered and spoken) and the operator's HTTP tools run by the agent
itself, with every branch of the recovery policy (timeout, error, invalid arguments, a slow
tool's filler, a caller who interrupts, a client that never answers, bounded rounds).
Real WebSocket, real HTTP tool server on loopback; scripted fake models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from examples.order_status import http_tool
from voice.clients.realtime import RealtimeClient
from voice.core.conversation import NO_RESULT
from voice.engines.contracts import Message, ToolCallDelta, ToolSpec
from voice.runtime.turns import TurnPolicy
from voice.settings import HttpToolSettings
from voice.testing.fakes import FakeChat
from voice.testing.harness import fake_engines, running_server, utterance
from voice.tools import HttpTool, ToolBox

from .test_tools import Seen, _recording, serving
from .voice_fakes import assert_valid

ORDER_TOOL = {
    "type": "function",
    "name": "get_order_status",
    "description": "Look up an order by its number.",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}
A100 = "Order A100 is shipped: it left the warehouse on Monday and arrives Thursday."


def _turns(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _types(client: RealtimeClient, after: int = 0) -> list[str]:
    return [r.event["type"] for r in client.events[after:]]


async def _say(client: RealtimeClient, timeout: float = 20) -> dict[str, Any]:
    after = len(client.events)
    await client.stream(utterance(), 16_000, realtime=False)
    return await client.wait_for_answer(after=after, timeout=timeout)


def _calls(order_id: object) -> FakeChat:
    """A model that looks an order up with the operator's tool and speaks what it says."""
    arguments = json.dumps({"order_id": order_id})
    return FakeChat(reply="", tool_calls=[("order_lookup", arguments)], tool_reply="{output}")


async def _one_turn(
    tmp_path: Path, chat: Any, tools: ToolBox, policy: TurnPolicy | None = None
) -> tuple[RealtimeClient, dict[str, Any]]:
    """One spoken turn on a server whose model is ``chat`` and whose tools are ``tools``."""
    engines = fake_engines(chat=[chat], tools=tools)
    async with running_server(tmp_path, engines, policy=policy) as (url, _, _):
        client = await RealtimeClient.open(url)
        done = await _say(client)
        await client.close()
    return client, done


# --- the operator's tool server ----------------------------------------------------------------


def _tool_app() -> Starlette:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(1.2)
        return await http_tool.order_status(request)

    async def hang(request: Request) -> Response:
        await asyncio.sleep(30)
        return PlainTextResponse("too late")

    async def boom(request: Request) -> Response:
        return PlainTextResponse("internal details", status_code=500)

    return Starlette(
        routes=[
            Route("/order_status", http_tool.order_status, methods=["POST"]),
            Route("/slow", slow, methods=["POST"]),
            Route("/hang", hang, methods=["POST"]),
            Route("/boom", boom, methods=["POST"]),
        ]
    )


@pytest.fixture(scope="module")
def tool_server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    with serving(_recording(_tool_app(), seen)) as url:
        yield url, seen


@pytest.fixture
async def box(tool_server: tuple[str, Seen]) -> AsyncIterator[Callable[..., ToolBox]]:
    """Makes a ToolBox with one HTTP tool (``order_lookup``) at a path of the tool server;
    closes it after the test."""
    made: list[ToolBox] = []

    def make(path: str, **kw: Any) -> ToolBox:
        settings = HttpToolSettings(
            name="order_lookup",
            description="Look up an order by its number.",
            url=f"{tool_server[0]}/{path}",
            parameters=ORDER_TOOL["parameters"],  # type: ignore[arg-type]
            **kw,
        )
        made.append(
            ToolBox(http=[HttpTool(settings, default_timeout_s=5.0, max_output_chars=2000)])
        )
        return made[-1]

    yield make
    for b in made:
        await b.aclose()


@pytest.fixture
def seen(tool_server: tuple[str, Seen]) -> Seen:
    tool_server[1].requests.clear()
    return tool_server[1]


# --- client-side tools ---------------------------------------------------------------------------


@pytest.mark.reliability("fault", "client tool: function_call streamed, answered, spoken")
async def test_a_client_tool_is_called_answered_and_spoken(tmp_path: Path) -> None:
    chat = FakeChat(
        reply="Let me check.",
        tool_calls=[("get_order_status", '{"order_id": "A100"}')],
        tool_reply="Your order {output}",
    )
    async with running_server(tmp_path, fake_engines(chat=[chat])) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "tools": [ORDER_TOOL]}}
        )
        updated = await client.wait_for("session.updated")
        assert updated["session"]["tools"][0]["name"] == "get_order_status"
        assert updated["session"]["tool_choice"] == "auto"
        first = await _say(client)
        # The call, as the GA protocol streams it.
        response = first["response"]
        assert response["status"] == "completed"
        message, call = response["output"]
        assert message["type"] == "message" and call["type"] == "function_call"
        assert call["name"] == "get_order_status" and json.loads(call["arguments"]) == {
            "order_id": "A100"
        }
        deltas = [r.event for r in client.events if r.event["type"].endswith("arguments.delta")]
        assert len(deltas) > 1 and "".join(d["delta"] for d in deltas) == call["arguments"]
        done = await client.wait_for("response.function_call_arguments.done")
        assert done["call_id"] == call["call_id"] and done["name"] == "get_order_status"
        spoken = await client.wait_for("response.output_audio_transcript.done")
        assert spoken["transcript"] == "Let me check."  # said before the call
        # The client runs it and answers; the agent speaks the result.
        after = len(client.events)
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": call["call_id"],
                    "output": "shipped on Monday",
                },
            }
        )
        await client.send({"type": "response.create"})
        answer = await client.wait_for("response.done", after=after)
        await client.close()
    assert answer["response"]["status"] == "completed"
    assert answer["response"]["output"][0]["content"][0]["transcript"] == (
        "Your order shipped on Monday"
    )
    assert "conversation.item.added" in _types(client, after)
    # What the model read: the call, then its answer, right after it.
    tail = chat.last_messages[-3:]
    assert tail[0]["role"] == "assistant" and tail[0]["content"] == "Let me check."
    assert tail[1]["tool_calls"][0]["id"] == call["call_id"]  # type: ignore[typeddict-item]
    assert tail[2] == {
        "role": "tool",
        "content": "shipped on Monday",
        "tool_call_id": call["call_id"],
    }
    assert_valid(client)


async def test_tool_choice_and_bad_tool_definitions(tmp_path: Path) -> None:
    chat = FakeChat(reply="Hello.", tool_calls=[("get_order_status", '{"order_id": "A1"}')])
    async with running_server(tmp_path, fake_engines(chat=[chat])) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "tools": [ORDER_TOOL],
                    "tool_choice": {"type": "function", "name": "get_order_status"},
                },
            }
        )
        await client.wait_for("session.updated")
        await _say(client)
        assert chat.last_tool_choice == "get_order_status"
        # A response may switch tools off.
        after = len(client.events)
        await client.send({"type": "response.create", "response": {"tool_choice": "none"}})
        plain = await client.wait_for("response.done", after=after)
        assert [o["type"] for o in plain["response"]["output"]] == ["message"]
        # A client never adds an MCP server (a URL the server would call), nor a bad schema.
        for bad, why in [
            ({"type": "mcp", "server_label": "x", "server_url": "http://10.0.0.1"}, "operator"),
            ({**ORDER_TOOL, "parameters": {"type": "nonsense"}}, "JSON Schema"),
        ]:
            after = len(client.events)
            await client.send(
                {"type": "session.update", "session": {"type": "realtime", "tools": [bad]}}
            )
            error = await client.wait_for("error", after=after)
            assert why in error["error"]["message"]
        # An answer to a call nobody made (and no response in flight that could make it).
        after = len(client.events)
        await client.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": "nope", "output": "x"},
            }
        )
        error = await client.wait_for("error", after=after)
        assert error["error"]["code"] == "item_not_found"
        await client.close()
    assert_valid(client)


@pytest.mark.reliability("fault", "client never answers a function_call: the next turn goes on")
async def test_a_call_the_client_never_answers_does_not_wedge_the_session(
    tmp_path: Path,
) -> None:
    chat = FakeChat(reply="", tool_calls=[("get_order_status", '{"order_id": "A100"}')])
    async with running_server(tmp_path, fake_engines(chat=[chat])) as (url, _, _):
        client = await RealtimeClient.open(url)
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "tools": [ORDER_TOOL]}}
        )
        first = await _say(client)
        (call,) = first["response"]["output"]
        assert call["type"] == "function_call"
        chat.tool_calls = []  # the next answer is words
        chat.reply = "Anything else?"
        second = await _say(client)  # no function_call_output: the user just speaks again
        await client.close()
    assert second["response"]["status"] == "completed"
    calls = [i for i, m in enumerate(chat.last_messages) if m.get("tool_calls")]
    (at,) = calls
    assert chat.last_messages[at + 1] == {
        "role": "tool",
        "content": NO_RESULT,
        "tool_call_id": call["call_id"],
    }
    outcomes = [t["outcome"] for t in _turns(tmp_path / "turns.jsonl")]
    assert outcomes == ["tool_call", "spoken"]


# --- server-side tools -------------------------------------------------------------------------


@pytest.mark.reliability("fault", "server HTTP tool: called by the agent, result spoken")
async def test_a_server_tool_is_run_by_the_agent_and_its_result_spoken(
    tmp_path: Path, box: Callable[..., ToolBox], seen: Seen
) -> None:
    client, done = await _one_turn(tmp_path, _calls("A100"), box("order_status"))
    call, message = done["response"]["output"]
    assert call["type"] == "mcp_call" and call["output"] == A100 and call["error"] is None
    assert message["content"][0]["transcript"] == A100
    types = _types(client)
    for t in (
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
    ):
        assert t in types
    assert len(seen.requests) == 1 and json.loads(seen.requests[0][2]) == {"order_id": "A100"}
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert turn["outcome"] == "spoken" and turn["recovery"] == []
    assert {"tool_decision", "tool_call"} <= set(turn["durations_ms"])
    assert_valid(client)


@pytest.mark.parametrize(
    ("path", "code", "heard"),
    [
        ("hang", "tool_timeout", "did not answer within 0.5 s"),
        ("boom", "tool_error", "order_lookup"),
    ],
)
@pytest.mark.reliability("fault", "server tool times out or fails: the agent still answers")
async def test_a_failing_server_tool_still_gets_an_answer(
    tmp_path: Path, box: Callable[..., ToolBox], path: str, code: str, heard: str
) -> None:
    policy = TurnPolicy(lead_ms=200, filler_text="")
    client, done = await _one_turn(tmp_path, _calls("A100"), box(path, timeout_s=0.5), policy)
    call, message = done["response"]["output"]
    assert call["error"] is not None and done["response"]["status"] == "completed"
    assert heard in message["content"][0]["transcript"]  # the model read why, and answered
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert code in turn["recovery"] and turn["outcome"] == "spoken"
    assert_valid(client)


@pytest.mark.reliability("fault", "slow server tool: a spoken filler, no dead air")
async def test_a_slow_tool_gets_a_spoken_filler(
    tmp_path: Path, box: Callable[..., ToolBox], seen: Seen
) -> None:
    policy = TurnPolicy(lead_ms=200, filler_after_s=0.3)
    _client, done = await _one_turn(tmp_path, _calls("A101"), box("slow"), policy)
    spoken = done["response"]["output"][1]["content"][0]["transcript"]
    assert spoken.startswith("One moment.") and "A101 is processing" in spoken
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert "tool_filler" in turn["recovery"]


@pytest.mark.reliability("input", "tool call with invalid arguments refused before any call")
async def test_invalid_arguments_are_refused_before_any_call(
    tmp_path: Path, box: Callable[..., ToolBox], seen: Seen
) -> None:
    _client, done = await _one_turn(tmp_path, _calls(5), box("order_status"))
    assert seen.requests == []  # nothing reached the tool
    call, message = done["response"]["output"]
    assert "is not of type 'string'" in call["error"]["message"]
    assert "is not of type 'string'" in message["content"][0]["transcript"]
    (turn,) = _turns(tmp_path / "turns.jsonl")
    assert "tool_invalid_arguments" in turn["recovery"]


class _AlwaysCalls:
    """A model that calls a tool whenever it is offered one."""

    name = "always-calls"

    def __init__(self) -> None:
        self.rounds = 0

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        tools: Sequence[ToolSpec] = (),
        tool_choice: str = "auto",
        parallel_tool_calls: bool = True,
    ) -> AsyncIterator[str | ToolCallDelta]:
        self.rounds += 1
        if tools:
            yield ToolCallDelta(
                0, '{"order_id": "A102"}', call_id=f"c{self.rounds}", name=tools[0].name
            )
        else:
            yield "Done looking."


@pytest.mark.reliability("fault", "a model that keeps calling tools: rounds bounded")
async def test_tool_rounds_are_bounded(
    tmp_path: Path, box: Callable[..., ToolBox], seen: Seen
) -> None:
    chat = _AlwaysCalls()
    engines = fake_engines(chat=[chat], tools=box("order_status"))
    async with running_server(
        tmp_path, engines, policy=TurnPolicy(lead_ms=200, max_tool_rounds=3)
    ) as (url, _, _):
        client = await RealtimeClient.open(url)
        done = await _say(client)
        await client.close()
    assert len(seen.requests) == 3 and chat.rounds == 4
    assert done["response"]["output"][-1]["content"][0]["transcript"] == "Done looking."


# --- interruptions -----------------------------------------------------------------------------


@pytest.mark.reliability("fault", "barge-in during a server tool: result kept, not spoken")
async def test_a_barge_in_during_a_tool_keeps_its_result_unspoken(
    tmp_path: Path, box: Callable[..., ToolBox], seen: Seen
) -> None:
    chat = FakeChat(
        reply="", tool_calls=[("order_lookup", '{"order_id": "A101"}')], tool_reply="{output}"
    )
    engines = fake_engines(chat=[chat], tools=box("slow"))
    policy = TurnPolicy(lead_ms=200, filler_text="")
    async with running_server(tmp_path, engines, policy=policy) as (url, _, _):
        client = await RealtimeClient.open(url)
        after = len(client.events)
        await client.stream(utterance(), 16_000, realtime=False)
        await client.wait_for("response.mcp_call.in_progress", after=after)
        # The caller speaks while the tool runs.
        cut_at = len(client.events)
        chat.tool_calls, chat.reply = [], "Sure, go on."
        await client.stream(utterance(), 16_000, realtime=False)
        cut = await client.wait_for("response.done", after=after)
        next_answer = await client.wait_for_answer(after=cut_at)
        await asyncio.sleep(1.5)  # the tool's answer comes back after the interruption
        chat.reply = "Noted."
        await _say(client)
        await client.close()
    assert cut["response"]["status"] == "cancelled"
    assert next_answer["response"]["status"] == "completed"
    said = " ".join(
        r.event["transcript"] for r in client.events if r.event["type"].endswith("transcript.done")
    )
    assert "A101" not in said  # never spoken
    assert len(seen.requests) == 1
    # ... but the model reads it from then on.
    tool_messages = [m for m in chat.last_messages if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [
        "Order A101 is processing: it is being packed and ships tomorrow."
    ]


@pytest.mark.reliability("fault", "side-effect tool never run on speculation the caller overrode")
async def test_a_side_effect_tool_never_runs_for_words_the_caller_took_back(
    tmp_path: Path, box: Callable[..., ToolBox], seen: Seen
) -> None:
    # The speculative answer starts in the user's pause and calls a tool that acts; the user
    # goes on speaking, so that answer is dropped: the tool must not have run for it.
    chat = FakeChat(
        reply="", tool_calls=[("order_lookup", '{"order_id": "A100"}')], tool_reply="{output}"
    )
    engines = fake_engines(chat=[chat], tools=box("order_status"))
    # server_vad: its 500 ms wait is what lets an answer start speculatively in the pause.
    server_vad = {"turn_detection": "server_vad"}
    async with running_server(tmp_path, engines, vad=server_vad) as (url, _, _):
        client = await RealtimeClient.open(url)
        import numpy as np

        from voice.testing.fakes import silence, tone

        pause_then_more = np.concatenate(
            [silence(200), tone(600), silence(350), tone(600), silence(900)]
        )
        after = len(client.events)
        await client.stream(pause_then_more, 16_000, realtime=True)
        done = await client.wait_for_answer(after=after)
        await client.close()
    assert done["response"]["status"] == "completed"
    assert chat.calls >= 2  # a speculative answer was started in the pause, then dropped
    assert len(seen.requests) == 1  # only the answer to what the caller finally said acted


@pytest.mark.reliability("fault", "official SDK: client tool round trip over a remote LLM")
async def test_the_official_sdk_round_trip_with_a_remote_llm(tmp_path: Path) -> None:
    """The done-when of the tools issue: the official openai SDK against a voice server whose
    LLM is an OpenAI-compatible server (the real OpenAIChat backend, streamed tool_calls)."""
    from openai import AsyncOpenAI

    from voice.engines.llm import OpenAIChat
    from voice.testing.fake_openai import Behaviour, FakeOpenAIServer

    fake = Behaviour(
        reply="Let me check.", tool_calls=[("get_order_status", '{"order_id": "A100"}')]
    )
    with FakeOpenAIServer(fake) as server:
        remote = OpenAIChat(server.url, model="fake", name="remote")
        async with running_server(tmp_path, fake_engines(chat=[remote])) as (url, _, _):
            client = AsyncOpenAI(api_key="local", websocket_base_url=url.removesuffix("/realtime"))
            events: list[dict[str, Any]] = []
            async with client.realtime.connect(model="castwork") as conn:
                await conn.session.update(session={"type": "realtime", "tools": [ORDER_TOOL]})  # type: ignore[list-item]
                await conn.conversation.item.create(
                    item={
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Where is order A100?"}],
                    }
                )
                await conn.response.create()
                async for event in conn:
                    events.append(event.to_dict())
                    if event.type == "response.function_call_arguments.done":
                        assert json.loads(event.arguments) == {"order_id": "A100"}
                        fake.tool_calls, fake.reply = [], "Order A100 ships Thursday."
                        await conn.conversation.item.create(
                            item={
                                "type": "function_call_output",
                                "call_id": event.call_id,
                                "output": A100,
                            }
                        )
                    if event.type == "response.done":
                        if (
                            event.response.output
                            and event.response.output[-1].type == "function_call"
                        ):
                            await conn.response.create()
                            continue
                        break
            await client.close()
        await remote.aclose()
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in types
    spoken = [
        e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"
    ]
    assert spoken == ["Let me check.", "Order A100 ships Thursday."]
    # The tools went to the remote model as chat-completions tools, and its second request
    # carried the call and the client's output right after it.
    first, second = fake.requests_seen
    assert first["tools"][0]["function"]["name"] == "get_order_status"
    call_message, tool_message = second["messages"][-2:]
    assert call_message["tool_calls"][0]["function"]["name"] == "get_order_status"
    assert tool_message["role"] == "tool" and tool_message["content"] == A100
    from .voice_fakes import SERVER_EVENT

    assert SERVER_EVENT is not None
    for e in events:
        SERVER_EVENT.validate_python(e)
