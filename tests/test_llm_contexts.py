"""Which llama.cpp context answers a request: the one that already holds its conversation."""

from __future__ import annotations

import threading

from voice.engines.contracts import Message
from voice.engines.llm import _Contexts

SYSTEM: Message = {"role": "system", "content": "Be brief."}


def _talk(*texts: str) -> list[Message]:
    out = [SYSTEM]
    for i, t in enumerate(texts):
        out.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return out


def test_a_conversation_goes_back_to_the_context_holding_its_history() -> None:
    pool = _Contexts()
    pool.put("A")
    pool.put("B")
    alice, bob = _talk("hi, I am Alice"), _talk("hello from Bob")
    # Two callers alternate; each keeps meeting its own context, whatever order they return in.
    a, b = pool.take(alice), pool.take(bob)
    pool.put(b, bob)
    pool.put(a, alice)  # A answered last: plain last-in-first-out would hand A to Bob
    assert pool.take(_talk("hello from Bob", "Hi Bob.", "what time is it")) == b
    assert pool.take(_talk("hi, I am Alice", "Hi Alice.", "and the weather")) == a


def test_a_new_conversation_takes_the_context_idle_longest() -> None:
    pool = _Contexts()
    pool.put("A", _talk("Carol's call, over"))
    pool.put("B", _talk("Bob, still talking"))  # returned last: Bob is likely to come back
    assert pool.take(_talk("new")) == "A"


def test_take_waits_for_a_context_to_come_back() -> None:
    pool = _Contexts()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(pool.take(_talk("x"))))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # every context busy: it waits
    pool.put("A")
    waiter.join(5)
    assert got == ["A"]


def test_a_shared_system_prompt_alone_does_not_pull_a_new_conversation() -> None:
    # Every conversation starts with the system prompt: a context that evaluated another
    # caller's call matches it, one never used does not, and the used one must not win.
    pool = _Contexts()
    pool.put("fresh")
    pool.put("carol", _talk("Carol's call", "Hi Carol.", "and more"))
    assert pool.take(_talk("new caller")) == "fresh"
    pool.put("fresh", _talk("new caller"))
    # Carol comes back and finds her context; the new caller's second turn finds its own.
    assert pool.take(_talk("Carol's call", "Hi Carol.", "and more", "Sure.", "bye")) == "carol"
    assert pool.take(_talk("new caller", "Hello.", "next")) == "fresh"
