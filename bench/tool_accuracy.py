"""Tool-calling accuracy and latency of the embedded LLMs, side by side.

Thirty scripted requests to a voice agent with four tools (order status, booking, hand-off
to a person, weather): two thirds should call a given tool with given arguments, one third
(chit-chat, general questions) must not call anything. They are split in two halves: ``dev``
was used while tuning the prompt, template and grammar; ``held-out`` never was, and is
reported on its own. For each model:

- decision: called when it should and answered when it should not
- tool: the expected tool; args ok: valid against the schema and equal to the expected values
- follow-up: after the expected call and a scripted result, with the tools still offered
  ("auto"), the spoken answer contains the result's key fact (uses it) and makes no new call
  (repeats); and with tool_choice "none" for that turn, whether it uses the result
- latency, warm (system prompt and tools already read, as from a session's second turn):
  to the first piece (a word or the call's name: the decision), and to the end of the call

and, without tools, a few plain replies: relevance (a keyword the answer should contain; the
replies are printed to read) and first-token latency. Everything runs on llama.cpp with 2
threads, as the production settings would, with their temperature and max_tokens.

    .venv/bin/python bench/tool_accuracy.py [--models smollm2-135m qwen2.5-0.5b qwen2.5-1.5b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from base.errors import ModelError
from voice.engines.contracts import Message, ToolCallDelta, ToolSpec
from voice.engines.llm import LlamaCppChat
from voice.engines.registry import resolve_llm
from voice.errors import EngineError
from voice.settings import LlmSettings

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
TOOLS = [
    ToolSpec(
        "lookup_order",
        "Look up where a customer's order is, by its order number.",
        {
            "type": "object",
            "properties": {
                "order_id": {
                    "type": "string",
                    "description": "The order number: a letter and four digits, e.g. A1234",
                }
            },
            "required": ["order_id"],
        },
    ),
    ToolSpec(
        "book_appointment",
        "Book an appointment for the caller on a day of the coming week at a time.",
        {
            "type": "object",
            "properties": {
                "day": {"type": "string", "enum": DAYS},
                "time": {
                    "type": "string",
                    "description": "24-hour time, HH:MM",
                    "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
                },
            },
            "required": ["day", "time"],
        },
    ),
    ToolSpec(
        "transfer_to_human",
        "Transfer the call to a human agent, when the caller asks for a person.",
        {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why, in a few words"}},
            "required": ["reason"],
        },
    ),
    ToolSpec(
        "get_weather",
        "Get today's weather forecast for a city.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    ),
]
SCHEMAS = {t.name: t.parameters for t in TOOLS}


@dataclass(frozen=True)
class Case:
    say: str
    tool: str | None = None  # None: must not call
    args: dict[str, str] = field(default_factory=dict)  # expected values (strings, any case)
    result: str = ""  # the tool's scripted answer
    facts: tuple[str, ...] = ()  # the follow-up uses the result if it says one of these


def _call(say: str, tool: str, args: dict[str, str], result: str, *facts: str) -> Case:
    return Case(say, tool, args, result, facts)


# fmt: off
DEV = [
    _call("Hi, can you tell me where my order A1234 is?", "lookup_order", {"order_id": "A1234"},
          "Order A1234 shipped on Monday and arrives on Thursday.", "thursday"),
    _call("I'd like to book an appointment on Tuesday at 10:30.", "book_appointment",
          {"day": "tuesday", "time": "10:30"}, "Booked for Tuesday 10:30, confirmation 5521.",
          "5521", "55 21"),
    _call("Can I speak to a real person please?", "transfer_to_human", {},
          "Transferring now; you are number 2 in the queue.", "2", "two"),
    _call("What's the weather like in Paris today?", "get_weather", {"city": "Paris"},
          "Paris: 18 degrees, light rain.", "rain", "18"),
    _call("My order number is B7781, has it shipped yet?", "lookup_order", {"order_id": "B7781"},
          "Order B7781 is still being packed; it ships tomorrow.", "tomorrow", "pack"),
    _call("Book me in for Friday at 3 pm.", "book_appointment",
          {"day": "friday", "time": "15:00"}, "Booked for Friday 15:00, confirmation 8830.",
          "8830", "88 30"),
    _call("Will I need an umbrella in London today?", "get_weather", {"city": "London"},
          "London: 14 degrees, heavy showers all afternoon.", "shower", "rain", "14"),
    _call("This is ridiculous, I want to talk to your manager.", "transfer_to_human", {},
          "Transferring to a supervisor; the wait is about 3 minutes.", "3", "three", "minute"),
    _call("Where's my package? The order is C3005.", "lookup_order", {"order_id": "C3005"},
          "Order C3005 was delivered yesterday to the front desk.", "delivered", "front desk"),
    _call("Could you book me something on Monday morning at 9?", "book_appointment",
          {"day": "monday", "time": "09:00"}, "Booked for Monday 09:00, confirmation 1207.",
          "1207", "12 07"),
    Case("Hello, how are you today?"),
    Case("Thanks, that's all I needed. Goodbye!"),
    Case("Can you tell me a short joke?"),
    Case("What is two plus three?"),
    Case("Who wrote Romeo and Juliet?"),
]
HELD_OUT = [
    _call("Check order D4410 for me.", "lookup_order", {"order_id": "D4410"},
          "Order D4410 is out for delivery and arrives by 6 pm today.", "6", "six", "today"),
    _call("I need an appointment on Wednesday at 14:00.", "book_appointment",
          {"day": "wednesday", "time": "14:00"},
          "Booked for Wednesday 14:00, confirmation 3391.", "3391", "33 91"),
    _call("Is it sunny in Madrid right now?", "get_weather", {"city": "Madrid"},
          "Madrid: 27 degrees, clear skies.", "27", "clear"),
    _call("Please put me through to an agent.", "transfer_to_human", {},
          "Transferring; an agent will answer in about 2 minutes.", "2", "two", "minute"),
    _call("Has order E9021 been delivered?", "lookup_order", {"order_id": "E9021"},
          "Order E9021 was returned to the warehouse: the address was wrong.", "return",
          "address"),
    _call("Can you schedule me for Saturday at 11 in the morning?", "book_appointment",
          {"day": "saturday", "time": "11:00"}, "Booked for Saturday 11:00, confirmation 7745.",
          "7745", "77 45"),
    _call("What's the forecast for Tokyo?", "get_weather", {"city": "Tokyo"},
          "Tokyo: 22 degrees, cloudy, wind 20 km/h.", "22", "cloud"),
    _call("I don't want a robot, get me a human.", "transfer_to_human", {},
          "Transferring to the next free person; you are first in line.", "first"),
    _call("Where is order F1188?", "lookup_order", {"order_id": "F1188"},
          "Order F1188 is held at customs; the new estimate is next Tuesday.", "customs",
          "tuesday"),
    _call("Book Thursday, half past four in the afternoon.", "book_appointment",
          {"day": "thursday", "time": "16:30"}, "Booked for Thursday 16:30, confirmation 6002.",
          "6002", "60 02"),
    Case("Good morning!"),
    Case("Can you tell me a fun fact about octopuses?"),
    Case("What's the capital of Italy?"),
    Case("Okay, thank you very much."),
    Case("How do you spell the word necessary?"),
]
# fmt: on
PLAIN = [
    ("What is the capital of France?", ("paris",)),
    ("Can you tell me a short joke about cats?", ("cat",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What should I pack for a beach holiday?", ("sunscreen", "swim", "towel", "sunglasses")),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("How do I say hello in Spanish?", ("hola",)),
]


@dataclass
class Answer:
    text: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    first_ms: float | None = None
    end_ms: float = 0.0
    error: str = ""


async def ask(
    chat: LlamaCppChat,
    messages: Sequence[Message],
    settings: LlmSettings,
    tools: bool,
    choice: str = "auto",
) -> Answer:
    answer, calls = Answer(), dict[int, dict[str, Any]]()
    t0 = time.perf_counter()
    try:
        async for piece in chat.stream(
            messages,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            tools=TOOLS if tools else (),
            tool_choice=choice,
        ):
            if answer.first_ms is None:
                answer.first_ms = (time.perf_counter() - t0) * 1000
            if isinstance(piece, ToolCallDelta):
                call = calls.setdefault(piece.index, {"name": piece.name, "arguments": ""})
                call["arguments"] += piece.arguments
            else:
                answer.text += piece
    except EngineError as exc:
        answer.error = str(exc)
    answer.end_ms = (time.perf_counter() - t0) * 1000
    answer.calls = [calls[i] for i in sorted(calls)]
    return answer


def _same(got: object, want: str) -> bool:
    return isinstance(got, str) and got.strip().casefold() == want.casefold()


def _args_ok(call: dict[str, Any], case: Case) -> tuple[bool, bool]:
    """(valid against the schema, equal to the expected values)."""
    try:
        args = json.loads(call["arguments"])
        jsonschema.validate(args, SCHEMAS[call["name"]])
    except (ValueError, jsonschema.ValidationError, KeyError):
        return False, False
    return True, all(_same(args.get(k), v) for k, v in case.args.items())


def _follow_up(case: Case, system: Message) -> list[Message]:
    call = {
        "id": "call_bench",
        "type": "function",
        "function": {"name": case.tool, "arguments": json.dumps(case.args)},
    }
    return [
        system,
        {"role": "user", "content": case.say},
        {"role": "assistant", "content": "", "tool_calls": [call]},  # type: ignore[typeddict-item]
        {"role": "tool", "content": case.result, "tool_call_id": "call_bench"},
    ]


@dataclass
class Tally:
    n: int = 0
    should_call: int = 0
    decision: int = 0
    tool: int = 0
    valid: int = 0
    calls_made: int = 0
    args: int = 0
    uses: int = 0
    repeats: int = 0
    uses_none: int = 0
    after_ms: list[float] = field(default_factory=list)  # follow-up's first word, "auto"
    after_none_ms: list[float] = field(default_factory=list)  # ... tool_choice "none"
    errors: int = 0
    first_ms: list[float] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)


async def run_split(
    chat: LlamaCppChat, cases: list[Case], system: Message, settings: LlmSettings, show: bool
) -> Tally:
    t = Tally()
    for case in cases:
        a = await ask(chat, [system, {"role": "user", "content": case.say}], settings, True)
        t.n += 1
        t.errors += bool(a.error)
        if a.first_ms is not None:
            t.first_ms.append(a.first_ms)
        called = bool(a.calls)
        t.decision += called == (case.tool is not None)
        for call in a.calls:
            t.calls_made += 1
            t.valid += _args_ok(call, case)[0]
        line = f"    {case.say[:48]:<48} -> " + (
            "; ".join(f"{c['name']}({c['arguments']})" for c in a.calls) or repr(a.text[:70])
        )
        if case.tool is not None:
            t.should_call += 1
            first = a.calls[0] if a.calls else None
            if first is not None and first["name"] == case.tool:
                t.tool += 1
                t.args += _args_ok(first, case)[1]
                t.call_ms.append(a.end_ms)
            b = await ask(chat, _follow_up(case, system), settings, True)
            t.uses += any(f in b.text.casefold() for f in case.facts)
            t.repeats += bool(b.calls)
            if b.text and b.first_ms is not None:
                t.after_ms.append(b.first_ms)
            told = await ask(chat, _follow_up(case, system), settings, True, "none")
            t.uses_none += any(f in told.text.casefold() for f in case.facts)
            if told.first_ms is not None:
                t.after_none_ms.append(told.first_ms)
            line += "\n      then: " + (
                "; ".join(f"{c['name']}({c['arguments']})" for c in b.calls) or repr(b.text[:90])
            )
            line += f"\n      then (none): {told.text[:90]!r}"
        if a.error:
            line += f"  [error: {a.error}]"
        if show:
            print(line, flush=True)
    return t


def _p(values: list[float], q: float) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.0f}"
    return f"{statistics.quantiles(values, n=100, method='inclusive')[int(q) - 1]:.0f}"


def tally_row(model: str, split: str, t: Tally) -> str:
    return (
        f"| {model} | {split} | {t.decision}/{t.n} | {t.tool}/{t.should_call} "
        f"| {t.valid}/{t.calls_made} | {t.args}/{t.should_call} | {t.uses}/{t.should_call} "
        f"| {t.repeats}/{t.should_call} | {t.uses_none}/{t.should_call} | {_p(t.first_ms, 50)} / {_p(t.first_ms, 95)} "
        f"| {_p(t.call_ms, 50)} / {_p(t.call_ms, 95)} "
        f"| {_p(t.after_ms, 50)} / {_p(t.after_none_ms, 50)} | {t.errors} |"
    )


async def bench_model(
    ref: str, settings: LlmSettings, show: bool, splits: Sequence[str]
) -> list[str]:
    chat = LlamaCppChat(
        resolve_llm(ref).path, name=ref, n_threads=2, n_threads_batch=2, context_tokens=4096
    )
    system: Message = {"role": "system", "content": settings.instructions}
    # Warm up: read the system prompt (with and without tools) once, as a session's first
    # turn does; every figure below is a later turn's.
    await ask(chat, [system, {"role": "user", "content": "Hi."}], settings, True)
    await ask(chat, [system, {"role": "user", "content": "Hi."}], settings, False)
    rows = []
    for split, cases in (("dev", DEV), ("held-out", HELD_OUT)):
        if split not in splits:
            continue
        if show:
            print(f"  {ref} {split}:", flush=True)
        rows.append(tally_row(ref, split, await run_split(chat, cases, system, settings, show)))
    hits, firsts = 0, []
    for prompt, keywords in PLAIN:
        a = await ask(chat, [system, {"role": "user", "content": prompt}], settings, False)
        hits += any(k in a.text.casefold() for k in keywords)
        firsts.append(a.first_ms or a.end_ms)
        if show:
            print(f"    plain: {prompt!r} -> {a.text.strip()!r}", flush=True)
    plain = (
        f"| {ref} | {hits}/{len(PLAIN)} | {_p(firsts, 50)} / {max(firsts):.0f} "
        f"| {chat.template_knows_tools} |"
    )
    return [*rows, plain]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b"])
    ap.add_argument("--quiet", action="store_true", help="only the tables, not every answer")
    ap.add_argument(
        "--splits",
        nargs="+",
        choices=["dev", "held-out"],
        default=["dev", "held-out"],
        help="tune on dev alone; report held-out apart",
    )
    args = ap.parse_args()
    settings = LlmSettings()
    print(
        f"temperature {settings.temperature}, max_tokens {settings.max_tokens}, 2 threads; "
        f"load average at start {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    tool_rows, plain_rows = [], []
    for ref in args.models:
        try:
            rows = asyncio.run(bench_model(ref, settings, not args.quiet, args.splits))
        except ModelError as exc:
            print(f"{ref}: skipped ({exc})")
            continue
        tool_rows += rows[:-1]
        plain_rows.append(rows[-1])
    print(f"\nload average at end {os.getloadavg()[0]:.1f}\n")
    print(
        "| model | split | decision | tool | args valid | args = expected | follow-up uses "
        "result | follow-up repeats call | uses result, choice none | first piece P50 / P95 ms | call complete P50 / "
        "P95 ms | follow-up first word P50 ms, auto / none | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(tool_rows))
    print("\n| model | plain replies relevant | first token P50 / max ms | native tools template |")
    print("|---|---|---|---|")
    print("\n".join(plain_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
