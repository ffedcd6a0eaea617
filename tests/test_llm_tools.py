"""Tool calls through the real chat backends: the OpenAI-compatible one against a local server
that streams calls the way vLLM does, and the embedded SmolLM2 decoding under the tool grammar
(its calls are valid against their schema however weak the model is)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import jsonschema
import pytest

from base.errors import ModelError
from voice.engines.contracts import Message, ToolCallDelta, ToolSpec
from voice.engines.llm import LlamaCppChat, OpenAIChat, _checked_llama, _Contexts, _prompt_key
from voice.engines.registry import resolve_llm
from voice.engines.toolgrammar import WORDS_ONLY, CallReader, answered, grammar, prompt_messages
from voice.errors import EngineError
from voice.testing.fake_openai import Behaviour, FakeOpenAIServer

ORDER = ToolSpec(
    "lookup_order",
    "Look up the status of a customer's order by its order number.",
    {
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "e.g. A1234"}},
        "required": ["order_id"],
    },
)
BOOK = ToolSpec(
    "book_slot",
    "Book an appointment.",
    {
        "type": "object",
        "properties": {
            "day": {"type": "string", "enum": ["monday", "tuesday", "wednesday"]},
            "hour": {"type": "integer", "minimum": 8, "maximum": 18},
        },
        "required": ["day", "hour"],
    },
)
SYSTEM: Message = {"role": "system", "content": "You are a helpful voice assistant. Be brief."}


def _ask(text: str) -> list[Message]:
    return [SYSTEM, {"role": "user", "content": text}]


async def _collect(stream: AsyncIterator[str | ToolCallDelta]) -> tuple[str, list[dict[str, Any]]]:
    """The text, and the calls assembled from their pieces (by index, in order)."""
    text, calls = "", dict[int, dict[str, Any]]()
    async for piece in stream:
        if isinstance(piece, str):
            text += piece
            continue
        call = calls.setdefault(piece.index, {"id": None, "name": None, "arguments": ""})
        call["id"] = call["id"] or piece.call_id
        call["name"] = call["name"] or piece.name
        call["arguments"] += piece.arguments
    return text, [calls[i] for i in sorted(calls)]


# --- the OpenAI-compatible backend against a real local HTTP server ------------------------


async def _remote(behaviour: Behaviour, messages: Sequence[Message], **kw: Any) -> Any:
    with FakeOpenAIServer(behaviour) as server:
        chat = OpenAIChat(server.url, model="fake", name="remote", timeout_s=10)
        try:
            return await _collect(chat.stream(messages, max_tokens=50, temperature=0.1, **kw))
        finally:
            await chat.aclose()


async def test_remote_tool_calls_stream_as_deltas_and_the_request_carries_the_tools() -> None:
    args = ['{"order_id": "A1234"}', '{"day": "tuesday", "hour": 10}']
    fake = Behaviour(
        reply="Let me check.",
        tool_calls=[("lookup_order", args[0]), ("book_slot", args[1])],
    )
    text, calls = await _remote(fake, _ask("Where is A1234?"), tools=[ORDER, BOOK])
    assert text == "Let me check."
    assert [(c["id"], c["name"], c["arguments"]) for c in calls] == [
        ("call_fake0", "lookup_order", args[0]),
        ("call_fake1", "book_slot", args[1]),
    ]
    (request,) = fake.requests_seen
    assert request["tools"] == [ORDER.openai(), BOOK.openai()]
    assert request["tool_choice"] == "auto" and request["parallel_tool_calls"] is True


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        ("none", "none"),
        ("required", "required"),
        ("book_slot", {"type": "function", "function": {"name": "book_slot"}}),
    ],
)
async def test_remote_tool_choice_is_mapped(choice: str, sent: object) -> None:
    fake = Behaviour()
    await _remote(
        fake, _ask("hi"), tools=[ORDER, BOOK], tool_choice=choice, parallel_tool_calls=False
    )
    (request,) = fake.requests_seen
    assert request["tool_choice"] == sent and request["parallel_tool_calls"] is False


async def test_remote_without_tools_sends_no_tool_fields() -> None:
    fake = Behaviour()
    text, calls = await _remote(fake, _ask("hi"))
    assert text == fake.reply and calls == []
    (request,) = fake.requests_seen
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & request.keys()


async def test_remote_history_with_calls_and_results_is_sent_as_chat_completions_expects() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup_order"}}
    call["function"]["arguments"] = '{"order_id": "A1234"}'
    history: list[Message] = [
        *_ask("Where is A1234?"),
        {"role": "assistant", "content": "", "tool_calls": [call]},  # type: ignore[list-item]
        {"role": "tool", "content": "shipped on Monday", "tool_call_id": "call_1"},
    ]
    fake = Behaviour(reply="It shipped on Monday.")
    text, _ = await _remote(fake, history, tools=[ORDER])
    assert text == "It shipped on Monday."
    assert fake.requests_seen[0]["messages"] == history


@pytest.mark.reliability("fault", "remote LLM connection cut in the middle of a tool call")
async def test_remote_cut_inside_a_call_is_an_engine_error() -> None:
    fake = Behaviour(
        mode="close_mid", reply="", tool_calls=[("lookup_order", '{"order_id": "A1234"}')]
    )
    fake.tokens_before_fault = 2  # the name and the first piece of the arguments
    with pytest.raises(EngineError, match="remote failed"):
        await _remote(fake, _ask("Where is A1234?"), tools=[ORDER])


@pytest.mark.reliability("input", "tool_choice naming a tool that was not offered")
async def test_remote_refuses_a_choice_that_names_no_offered_tool() -> None:
    fake = Behaviour()
    with pytest.raises(EngineError, match="not among the offered tools"):
        await _remote(fake, _ask("hi"), tools=[ORDER], tool_choice="book_slot")
    assert fake.requests_seen == []  # refused here, not sent for the server to refuse


# --- the grammar's reader, fed the way tokens arrive -----------------------------------------


def _split(text: str, size: int) -> Iterator[str]:
    return (text[i : i + size] for i in range(0, len(text), size))


@pytest.mark.parametrize("size", [1, 3, 7, 100])
def test_reader_splits_text_and_calls_wherever_the_tokens_break(size: int) -> None:
    answer = (
        "One moment."
        '<tool_call>\n{"name": "lookup_order", "arguments": {"order_id": "A{1}\\"2"}}\n</tool_call>\n'
        '{"name": "book_slot", "arguments": {"day": "monday", "hour": 9}}'
    )
    reader, pieces = CallReader(), list[str | ToolCallDelta]()
    for piece in _split(answer, size):
        pieces += reader.feed(piece)
    reader.close(max_tokens=100)
    text = "".join(p for p in pieces if isinstance(p, str))
    deltas = [p for p in pieces if isinstance(p, ToolCallDelta)]
    assert text == "One moment."
    names = [(d.index, d.name) for d in deltas if d.name]
    assert names == [(0, "lookup_order"), (1, "book_slot")]
    assert all(d.call_id and d.call_id.startswith("call_") for d in deltas if d.name)
    args = ["".join(d.arguments for d in deltas if d.index == i) for i in (0, 1)]
    assert json.loads(args[0]) == {"order_id": 'A{1}"2'}
    assert json.loads(args[1]) == {"day": "monday", "hour": 9}


def test_reader_refuses_an_answer_cut_inside_its_first_call() -> None:
    reader = CallReader()
    reader.feed('<tool_call>{"name": "lookup_order", "arguments": {"order_id": "A1')
    with pytest.raises(EngineError, match="max_tokens=12"):
        reader.close(max_tokens=12)


def test_reader_drops_a_repeated_call_and_a_later_call_cut_off() -> None:
    first = '{"name": "lookup_order", "arguments": {"order_id": "A1"}}'
    reader = CallReader()
    pieces = reader.feed(first + first)
    assert reader.repeating  # the caller stops generating here
    pieces += reader.feed('{"name": "book_slot", "arguments": {"day": "mon')
    reader.close(max_tokens=40)  # the first call is whole: no error
    assert {d.index for d in pieces if isinstance(d, ToolCallDelta)} == {0}
    assert [d.name for d in pieces if isinstance(d, ToolCallDelta) and d.name] == ["lookup_order"]


def test_reader_drops_a_call_whose_result_the_conversation_holds() -> None:
    reader = CallReader(answered=[("lookup_order", {"order_id": "A1"})])
    pieces = reader.feed('{"name": "lookup_order", "arguments": {"order_id": "A1"}}')
    assert pieces == [] and reader.repeating and not reader.passed_on
    other = CallReader(answered=[("lookup_order", {"order_id": "A1"})])
    pieces = other.feed('{"name": "lookup_order", "arguments": {"order_id": "B2"}}')
    assert [d.name for d in pieces if isinstance(d, ToolCallDelta) and d.name] == ["lookup_order"]


def _after_result() -> list[Message]:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup_order"}}
    call["function"]["arguments"] = '{"order_id": "A1234"}'
    return [
        *_ask("Where is my order A1234?"),
        {"role": "assistant", "content": "", "tool_calls": [call]},  # type: ignore[list-item]
        {"role": "tool", "content": "Order A1234 shipped on Monday.", "tool_call_id": "c1"},
    ]


def test_answered_calls_are_those_since_the_user_last_spoke() -> None:
    history = _after_result()
    assert answered(history) == [("lookup_order", {"order_id": "A1234"})]
    assert answered([*history, {"role": "user", "content": "thanks"}]) == []


def test_prompt_renders_history_for_templates_with_and_without_tools() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup_order"}}
    call["function"]["arguments"] = '{"order_id": "A1"}'
    history: list[Message] = [
        *_ask("Where is A1?"),
        {"role": "assistant", "content": "", "tool_calls": [call]},  # type: ignore[list-item]
        {"role": "tool", "content": "shipped", "tool_call_id": "c1"},
    ]
    native, tools = prompt_messages(history, [ORDER], native=True)
    assert tools == [ORDER.openai()]
    # Qwen's template writes `arguments | tojson`: it needs the object, not its JSON text.
    assert native[2]["tool_calls"][0]["function"]["arguments"] == {"order_id": "A1"}
    plain, tools = prompt_messages(history, [ORDER], native=False)
    assert (
        tools is None
        and "<tools>" in plain[0]["content"]
        and '"lookup_order"' in plain[0]["content"]
    )
    assert plain[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "lookup_order", "arguments": {"order_id": "A1"}}\n</tool_call>',
    }
    assert plain[3] == {"role": "user", "content": "<tool_response>\nshipped\n</tool_response>"}
    # A plain conversation passes through untouched.
    assert prompt_messages(_ask("hi"), [], native=False)[0] == _ask("hi")
    # tool_choice "none": the same tools (the same cached prefix), and a last note.
    for native in (True, False):
        words, _ = prompt_messages(history, [ORDER], native=native, words_only=True)
        assert words[:-1] == prompt_messages(history, [ORDER], native=native)[0]
        assert words[-1] == {"role": "system", "content": WORDS_ONLY}


def test_a_context_that_read_other_tools_is_not_taken_for_the_same_conversation() -> None:
    pool = _Contexts()
    talk = [*_ask("hi"), {"role": "assistant", "content": "Hello."}]
    pool.put("with-order", _prompt_key(talk, [ORDER]))
    pool.put("with-book", _prompt_key(talk, [BOOK]))
    assert pool.take(_prompt_key([*talk, {"role": "user", "content": "x"}], [BOOK])) == "with-book"


# --- the embedded model under the grammar ----------------------------------------------------


@pytest.fixture(scope="module")
def smollm() -> LlamaCppChat:
    return LlamaCppChat(resolve_llm("smollm2-135m").path, name="smollm2", n_threads=1)


REQUESTS = [
    "Where is my order A1234?",
    "Book me in on tuesday at 10.",
    "Hello! How are you?",
    "Can you check order B-77 for me please",
]


@pytest.mark.models
@pytest.mark.reliability(
    "input",
    "embedded SmolLM2 forced to call: every call valid against its schema",
    tried=len(REQUESTS),
)
async def test_embedded_required_call_is_valid_against_the_schema(smollm: LlamaCppChat) -> None:
    specs = {t.name: t for t in (ORDER, BOOK)}
    for n, text in enumerate(REQUESTS):
        parallel = n % 2 == 0
        stream = smollm.stream(
            _ask(text),
            max_tokens=120,
            temperature=0.0,
            tools=[ORDER, BOOK],
            tool_choice="required",
            parallel_tool_calls=parallel,
        )
        said, calls = await _collect(stream)
        assert said == "" and calls, (text, said)
        assert parallel or len(calls) == 1
        for call in calls:
            assert call["id"].startswith("call_")
            jsonschema.validate(json.loads(call["arguments"]), specs[call["name"]].parameters)


@pytest.mark.models
async def test_embedded_named_choice_calls_that_tool(smollm: LlamaCppChat) -> None:
    stream = smollm.stream(
        _ask("Where is my order A1234?"),
        max_tokens=120,
        temperature=0.0,
        tools=[ORDER, BOOK],
        tool_choice="book_slot",
    )
    _, calls = await _collect(stream)
    assert {c["name"] for c in calls} == {"book_slot"}
    for call in calls:
        jsonschema.validate(json.loads(call["arguments"]), BOOK.parameters)


@pytest.mark.models
async def test_embedded_choice_none_speaks_text_only(smollm: LlamaCppChat) -> None:
    for text in REQUESTS[::2]:  # a call-shaped request and chit-chat
        stream = smollm.stream(
            _ask(text), max_tokens=30, temperature=0.0, tools=[ORDER, BOOK], tool_choice="none"
        )
        said, calls = await _collect(stream)
        assert calls == [] and said.strip()
        assert "<" not in said and "{" not in said


@pytest.mark.models
@pytest.mark.parametrize("choice", ["none", "auto"])
async def test_embedded_answers_after_a_tool_result_without_calling_it_again(
    smollm: LlamaCppChat, choice: str
) -> None:
    said, calls = await _collect(
        smollm.stream(
            _after_result(), max_tokens=30, temperature=0.0, tools=[ORDER], tool_choice=choice
        )
    )
    assert said.strip() or calls
    assert ("lookup_order", {"order_id": "A1234"}) not in [
        (c["name"], json.loads(c["arguments"])) for c in calls
    ]


@pytest.mark.models
async def test_embedded_with_every_tool_answered_goes_straight_to_words(
    smollm: LlamaCppChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once every offered tool has its result this turn, one words-only pass, not a pass
    that may write the same call again first."""
    passes: list[bool] = []
    generate = smollm._generate

    def counting(*args: Any, **kwargs: Any) -> Iterator[str]:
        passes.append(kwargs.get("words_only", False))
        return generate(*args, **kwargs)

    monkeypatch.setattr(smollm, "_generate", counting)
    said, calls = await _collect(
        smollm.stream(_after_result(), max_tokens=30, temperature=0.0, tools=[ORDER])
    )
    assert calls == [] and said.strip() and passes == [True]
    passes.clear()  # a tool not called yet: the first pass may still call it
    with contextlib.suppress(EngineError):  # SmolLM2 may write a call past max_tokens
        await _collect(
            smollm.stream(_after_result(), max_tokens=30, temperature=0.0, tools=[ORDER, BOOK])
        )
    assert passes[0] is False


@pytest.mark.models
async def test_embedded_without_tools_answers_exactly_as_before(smollm: LlamaCppChat) -> None:
    """No tools: no grammar and the same prompt, so greedy decoding gives what llama.cpp's
    own chat completion gives."""
    from llama_cpp import Llama

    llama = Llama(
        model_path=str(resolve_llm("smollm2-135m").path), n_ctx=2048, n_threads=1, verbose=False
    )
    try:
        direct = llama.create_chat_completion(
            messages=_ask("What is the capital of France?"),  # type: ignore[arg-type]
            max_tokens=20,
            temperature=0.0,
        )
    finally:
        llama.close()
    said, calls = await _collect(
        smollm.stream(_ask("What is the capital of France?"), max_tokens=20, temperature=0.0)
    )
    assert calls == [] and said == direct["choices"][0]["message"]["content"]  # type: ignore[index]


@pytest.mark.models
async def test_warming_reads_the_prompt_into_every_context_and_changes_no_answer() -> None:
    """warm() reads the system prompt and tools in one context and copies the state to the
    others: each then holds that prefix (a turn evaluates only its tail), and a context that
    got the copy answers exactly as a cold one does (greedy)."""
    path = resolve_llm("smollm2-135m").path
    warmed = LlamaCppChat(path, name="warm", n_threads=1, parallel=2)
    cold = LlamaCppChat(path, name="cold", n_threads=1)
    warmed.warm([SYSTEM], [ORDER])
    contexts = warmed._contexts.take_free()
    assert len(contexts) == 2 and contexts[0] is not contexts[1]  # each its own llama.cpp
    held = [list(c.input_ids[: c.n_tokens]) for c in contexts]
    assert held[0] == held[1] and len(held[0]) > 50
    text = contexts[1].detokenize(held[1]).decode()
    assert SYSTEM["content"] in text and ORDER.description in text
    warmed._contexts.put(contexts[1])  # the copy answers next
    ask = _ask("Where is my order A1234?")

    async def answer(chat: LlamaCppChat) -> tuple[str, list[tuple[str, str]]]:
        said, calls = await _collect(
            chat.stream(ask, max_tokens=40, temperature=0.0, tools=[ORDER])
        )
        return said, [(c["name"], c["arguments"]) for c in calls]

    assert await answer(warmed) == await answer(cold)
    # The turn's prompt shares the whole system block (tools included) with what was read.
    after = list(contexts[1].input_ids[: contexts[1].n_tokens])
    shared = next((i for i, (a, b) in enumerate(zip(after, held[1], strict=False)) if a != b), 0)
    assert ORDER.description in contexts[1].detokenize(after[:shared]).decode()


@pytest.mark.models
def test_checking_the_grammar_after_the_draw_decodes_what_llama_cpp_decodes() -> None:
    """Greedy, the cheap sampler (the grammar checked against the drawn token, the whole
    vocabulary only when it refuses) writes exactly what llama-cpp-python's own grammar
    sampling writes, refusals included (SmolLM2 wants to answer in words)."""
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

    path = str(resolve_llm("smollm2-135m").path)
    answers: dict[str, list[str]] = {}
    for kind, cls in (("theirs", Llama), ("ours", _checked_llama())):
        llama = cls(model_path=path, n_ctx=2048, n_threads=1, verbose=False)
        try:
            for text, choice in [(REQUESTS[0], "required"), (REQUESTS[1], "auto")]:
                rules = grammar([ORDER, BOOK], choice, parallel=True)
                prompt, _ = prompt_messages(_ask(text), [ORDER, BOOK], native=False)
                done = llama.create_chat_completion(
                    messages=prompt,
                    max_tokens=40,
                    temperature=0.0,
                    grammar=LlamaGrammar.from_string(rules, verbose=False),
                )
                answers.setdefault(kind, []).append(done["choices"][0]["message"]["content"])
        finally:
            llama.close()
    assert answers["ours"] == answers["theirs"]
    assert answers["ours"][0].lstrip().startswith(("<tool_call>", "{"))


@pytest.mark.models
def test_checked_sampling_draws_what_llama_cpp_draws_at_a_temperature() -> None:
    """Sampled, with the same seed, text the grammar never refuses comes out the same: the
    draw sees the same candidates in the same state (a sampler sorting them in place once
    scrambled the next draw's token ids, and every answer after the first was word salad)."""
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

    path = str(resolve_llm("smollm2-135m").path)
    rules = grammar([ORDER], "none", parallel=True)
    answers: dict[str, list[str]] = {}
    for kind, cls in (("theirs", Llama), ("ours", _checked_llama())):
        llama = cls(model_path=path, n_ctx=2048, n_threads=1, seed=7, verbose=False)
        try:
            for text in ("Tell me about cats.", "What is the capital of France?"):
                done = llama.create_chat_completion(
                    messages=_ask(text),  # type: ignore[arg-type]
                    max_tokens=30,
                    temperature=0.8,
                    grammar=LlamaGrammar.from_string(rules, verbose=False),
                )
                answers.setdefault(kind, []).append(done["choices"][0]["message"]["content"])
        finally:
            llama.close()
    assert answers["ours"] == answers["theirs"]


@pytest.mark.models
@pytest.mark.reliability("fault", "embedded model's tool call cut off by max_tokens")
async def test_embedded_call_cut_by_max_tokens_is_an_error_not_broken_json(
    smollm: LlamaCppChat,
) -> None:
    stream = smollm.stream(
        _ask("Where is my order A1234?"),
        max_tokens=6,
        temperature=0.0,
        tools=[ORDER],
        tool_choice="required",
    )
    with pytest.raises(EngineError, match="max_tokens=6"):
        await _collect(stream)


@pytest.mark.models
async def test_embedded_qwen_native_template_call_is_valid() -> None:
    """Qwen2.5 (opt-in, CASTWORK_EXTRA_MODELS) renders tools with its own template."""
    try:
        path = resolve_llm("qwen2.5-0.5b").path
    except ModelError:
        pytest.skip("qwen2.5-0.5b is not installed (opt-in)")
    qwen = LlamaCppChat(path, name="qwen", n_threads=2)
    assert qwen.template_knows_tools
    _, calls = await _collect(
        qwen.stream(
            _ask("Where is my order A1234?"),
            max_tokens=60,
            temperature=0.0,
            tools=[ORDER, BOOK],
            tool_choice="auto",
        )
    )
    assert [c["name"] for c in calls] == ["lookup_order"]
    assert json.loads(calls[0]["arguments"]) == {"order_id": "A1234"}


@pytest.mark.models
def test_a_prompt_too_long_to_warm_is_logged_and_the_contexts_stay_usable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Instructions longer than the context fail the warm-up, not the server's start."""
    from types import SimpleNamespace

    from voice.runtime.server import warm_local_llms

    chat = LlamaCppChat(
        resolve_llm("smollm2-135m").path, name="tiny", n_threads=1, context_tokens=256
    )
    settings = SimpleNamespace(llm=SimpleNamespace(instructions="Be brief. " * 400))
    runtime = SimpleNamespace(settings=settings, engines=SimpleNamespace(tools=None, chat=[chat]))
    warm_local_llms([runtime, runtime])  # type: ignore[list-item]  # two arms, one model
    (record,) = [r for r in caplog.records if "could not warm tiny" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert len(chat._contexts.take_free()) == 1  # handed back, not lost
