"""The response runner (voice/runtime/turns.py) on scripted engines, without a socket."""

from __future__ import annotations

from typing import Any

from voice.core.actions import StartResponse
from voice.core.record import TurnRecord
from voice.runtime.turns import ResponseRunner, TurnPolicy
from voice.testing.fakes import FakeChat
from voice.testing.harness import fake_engines

from .voice_fakes import SERVER_EVENT


def _runner(chat: FakeChat, sent: list[dict[str, Any]]) -> ResponseRunner:
    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    start = StartResponse(
        "resp_1",
        "item_1",
        [{"role": "user", "content": "hello"}],
        TurnRecord(session_id="sess_1", turn_id="turn_1"),
        modalities=["audio"],
        max_output_tokens=None,
    )
    return ResponseRunner(start, fake_engines(chat=[chat]), TurnPolicy(), send)


async def test_a_cancel_before_the_runner_starts_is_not_lost() -> None:
    # response.cancel right behind response.create: the server handles the cancel before the
    # runner's task has first run. The answer must not then be spoken in full.
    chat, sent = FakeChat(reply="Yes."), []
    runner = _runner(chat, sent)
    runner.cancel("client_cancelled")
    await runner.run()
    assert runner.status == "cancelled" and chat.calls == 0
    types = [e["type"] for e in sent]
    assert "response.output_audio.delta" not in types
    # It still opens before it closes, as every response does.
    assert types[0] == "response.created" and types[-1] == "response.done"
    assert sent[-1]["response"]["status"] == "cancelled"
    assert SERVER_EVENT is not None
    for event in sent:
        SERVER_EVENT.validate_python(event)


async def test_a_response_left_alone_completes() -> None:
    chat, sent = FakeChat(reply="Yes."), []
    runner = _runner(chat, sent)
    await runner.run()
    assert runner.status == "completed" and chat.calls == 1
    assert [e["type"] for e in sent].count("response.created") == 1
    assert sent[-1]["response"]["status"] == "completed"
