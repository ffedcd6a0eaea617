"""Tool calls from a local model, reliably: the prompt that offers the tools, the grammar the
answer is decoded under, and the reader that turns what was written into text and
:class:`~voice.engines.contracts.ToolCallDelta` pieces as it streams.

The grammar allows exactly two shapes of answer (:func:`grammar`)::

    spoken text            no '{', '<' or '`' anywhere (nor a call dressed as code)
    [text] call [call...]  call = <tool_call> {"name": N, "arguments": A} </tool_call>
                           (tags optional), N one of the offered names, A valid for N's schema

so a small model cannot write half a call, a misspelt name or arguments of the wrong type;
nothing here parses free text in the hope that it is JSON. ``tool_choice`` "required" or a
name removes the text branch (and the other names); "none" leaves only text. What the grammar
cannot say (a call repeated, one cut off by max_tokens) the reader handles (:class:`CallReader`).
"""

from __future__ import annotations

import functools
import json
import math
import re
import secrets
from collections.abc import Sequence
from typing import Any

from voice.engines.contracts import Message, ToolCallDelta, ToolChoice, ToolSpec
from voice.errors import EngineError

# The last message of a tool_choice "none" turn with tools offered (see prompt_messages).
WORDS_ONLY = "Now answer the user in words, from the results above. Do not call a function."
MAX_PARALLEL_CALLS = 4  # a model that loops on calls stops here, not at max_tokens

# Spoken text: never the start of a call, even later on, nor a call dressed as code (a code
# fence, a bare list: Qwen2.5 wrote "```json [...]" when told not to call).
_TEXT = r"[^<{`\[\" \t\n] [^<{`]*"


def callable_tools(tools: Sequence[ToolSpec], choice: ToolChoice) -> list[str]:
    """The names the model may call under ``choice``; an impossible choice is an EngineError
    (as a server's 400 would be), not a silent text answer."""
    names = [t.name for t in tools]
    if choice == "none":
        return []
    if choice == "auto":
        return names
    if not tools:
        raise EngineError(f"tool_choice {choice!r} but no tools were offered", stage="llm")
    if choice == "required":
        return names
    if choice not in names:
        raise EngineError(
            f"tool_choice {choice!r} is not among the offered tools ({', '.join(names)})",
            stage="llm",
        )
    return [choice]


def grammar(tools: Sequence[ToolSpec], choice: ToolChoice, *, parallel: bool) -> str:
    """The GBNF grammar for an answer to ``tools`` under ``choice``."""
    names = callable_tools(tools, choice)
    for t in tools:
        if t.parameters.get("type") != "object":
            raise EngineError(f"tool {t.name!r}: parameters must be an object schema", stage="llm")
    specs = json.dumps([[t.name, _bounded(t.parameters)] for t in tools if t.name in names])
    mode = "text" if not names else "auto" if choice == "auto" else "calls"
    return _grammar(specs, mode, parallel)


def _bounded(schema: Any) -> Any:
    """``schema`` with small integer ranges (an hour, a party size) as enums: llama.cpp's
    converter ignores minimum/maximum, so "hour 8-18" let SmolLM2 write 23. Wider ranges,
    and bounds on other numbers, are left to the caller's validation."""
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    if out.get("type") == "integer" and "enum" not in out:
        low = max(_bound(out, "minimum", 1), _bound(out, "exclusiveMinimum", 1))
        high = min(_bound(out, "maximum", -1), _bound(out, "exclusiveMaximum", -1))
        if 0 <= high - low < 256:
            out["enum"] = list(range(int(low), int(high) + 1))
    return out


def _bound(schema: dict[str, Any], key: str, side: int) -> float:
    """A bound as an inclusive integer (+-inf when absent); ``side`` 1 for lower bounds."""
    value = schema.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return -side * math.inf
    if key.startswith("exclusive"):
        return math.floor(value) + 1 if side == 1 else math.ceil(value) - 1
    return math.ceil(value) if side == 1 else math.floor(value)


@functools.lru_cache(maxsize=32)
def _grammar(specs_json: str, mode: str, parallel: bool) -> str:
    if mode == "text":
        return f"root ::= answer-text\nanswer-text ::= {_TEXT}\n"
    from llama_cpp.llama_grammar import SchemaConverter

    alternatives = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": parameters},
            "required": ["name", "arguments"],
        }
        for name, parameters in json.loads(specs_json)
    ]
    schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    # llama-cpp-python's own converter (the one its JSON-schema grammars use); it is untyped.
    converter = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        converter.visit(converter.resolve_refs(schema, "tools"), "call-json")  # type: ignore[no-untyped-call]
    except Exception as exc:  # the converter raises plain errors on schemas it cannot map
        raise EngineError(
            f"a tool's parameters cannot be decoded under a grammar: {exc}", stage="llm"
        ) from exc
    more = f" (answer-gap answer-call){{0,{MAX_PARALLEL_CALLS - 1}}}" if parallel else ""
    root = "answer-calls" if mode == "calls" else "answer-text | answer-text? answer-calls"
    return "\n".join(
        [
            f"root ::= {root}",
            f"answer-text ::= {_TEXT}",
            f"answer-calls ::= answer-call{more}",
            'answer-call ::= "<tool_call>" answer-gap call-json answer-gap "</tool_call>" | call-json',
            "answer-gap ::= [ \\n]? [ \\n]?",
            converter.format_grammar(),  # type: ignore[no-untyped-call]
        ]
    )


def prompt_messages(
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    native: bool,
    *,
    words_only: bool = False,
) -> tuple[list[Any], list[dict[str, Any]] | None]:
    """The messages (and ``tools`` entries) to render with the GGUF's chat template.

    ``native``: the template renders tools, tool calls and tool results itself (Qwen2.5);
    it takes a call's arguments as an object. Otherwise calls and results become text the
    template can show, and the tools a system-prompt section of ours in the same format.
    Either way the same tools render the same prefix every turn (llama.cpp reuses it).

    ``words_only`` (tool_choice "none"): the tools stay in the prompt, keeping that prefix,
    and a last note says to answer in words. Without it Qwen2.5 answered a tool result with
    a call dressed as code ("```json", then "Mark the order as shipped." once the grammar
    refused code); dropping the tools instead cost the next turn seconds to read them again.
    """
    if native:
        out: list[Any] = [_native(m) for m in messages]
    else:
        out = [_plain(m) for m in messages]
        if tools:
            section = _tools_section(tools)
            if out and out[0]["role"] == "system":
                out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + section}
            else:
                out.insert(0, {"role": "system", "content": section})
    if tools and words_only:
        out.append({"role": "system", "content": WORDS_ONLY})
    return out, ([t.openai() for t in tools] or None) if native else None


def _arguments(text: str) -> Any:
    try:
        return json.loads(text or "{}")
    except ValueError:
        return text  # shown as written: a template must not fail on an earlier bad call


def _native(m: Message) -> Any:
    if "tool_calls" not in m:
        return m
    calls = [
        {**c, "function": {**c["function"], "arguments": _arguments(c["function"]["arguments"])}}
        for c in m["tool_calls"]
    ]
    return {**m, "tool_calls": calls}


def _plain(m: Message) -> Any:
    if m["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
    if "tool_calls" not in m:
        return m
    calls = [
        "<tool_call>\n"
        + json.dumps(
            {"name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])}
        )
        + "\n</tool_call>"
        for c in m["tool_calls"]
    ]
    return {"role": "assistant", "content": "\n".join([m["content"], *calls]).strip()}


def _tools_section(tools: Sequence[ToolSpec]) -> str:
    # The wording Qwen2.5's template uses, which small instruction-tuned models have seen.
    listed = "\n".join(json.dumps(t.openai()) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n'
        "Otherwise answer in plain words."
    )


def answered(messages: Sequence[Message]) -> list[tuple[str, Any]]:
    """The calls made since the user last spoke, as (name, arguments) pairs."""
    calls = []
    for m in reversed(messages):
        if m["role"] == "user":
            break
        for c in m.get("tool_calls", ()):
            calls.append((c["function"]["name"], _arguments(c["function"]["arguments"])))
    return calls


_NAME = re.compile(r'(?:<tool_call>)?\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")')
_ARGS = re.compile(_NAME.pattern + r'\s*,\s*"arguments"\s*:\s*')


class CallReader:
    """Splits an answer written under :func:`grammar` into text and call pieces, as it
    streams. The grammar guarantees the shape; this only follows it.

    The first call streams at once: its name (with a fresh call id) as soon as it is
    complete, then its arguments as they are written. Later calls are held until their
    arguments close, because small models go on writing calls until ``max_tokens`` (SmolLM2
    wrote four in a row): a later call cut off there is dropped, not passed on half-written,
    and one identical to an earlier call is dropped and ends the answer (:attr:`repeating`).
    Only a first call cut off is an error (:meth:`close`): nothing usable was written.

    ``answered``: calls whose results the conversation already holds (:func:`answered`).
    Small models call them again rather than read the result (Qwen2.5 did, 10 times in 10);
    such a call is dropped too, so every call is held until it is complete.
    """

    def __init__(self, answered: Sequence[tuple[str, Any]] = ()) -> None:
        self._state = "text"  # text -> head -> args -> tail -> between -> head ...
        self._head = ""
        self._named = False
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._name = ""
        self._written = ""  # the current call's arguments so far
        self._unsent: list[str] = []  # ... of which not yet passed on
        self._held: list[ToolCallDelta] = []
        self._done: list[tuple[str, Any]] = []
        self._answered = list(answered)
        self.repeating = False
        self.passed_on = False  # any text or call given out yet

    @property
    def _index(self) -> int:
        return len(self._done)

    def feed(self, piece: str) -> list[str | ToolCallDelta]:
        out: list[str | ToolCallDelta] = []
        text: list[str] = []
        for ch in piece:
            if self._state in ("text", "between") and ch in "<{":
                if text:
                    out.append("".join(text))
                    text.clear()
                self._state, self._head, self._named = "head", "", False
            if self._state == "text":
                text.append(ch)
            elif self._state == "head":
                self._head += ch
                if not self._named and (m := _NAME.fullmatch(self._head)):
                    self._named, self._name = True, json.loads(m[1])
                    call_id = "call_" + secrets.token_hex(12)
                    self._emit(out, ToolCallDelta(self._index, call_id=call_id, name=self._name))
                elif ch in "{[" and _ARGS.fullmatch(self._head[:-1]):
                    self._state, self._depth, self._written = "args", 0, ""
            if self._state == "args":
                self._written += ch
                self._unsent.append(ch)
                if self._closes(ch):
                    self._state = "tail"
                    self._flush_arguments(out)
                    self._finish_call(out)
            elif self._state == "tail":
                self._head += ch
                if not self._head.startswith("<") or self._head.endswith("</tool_call>"):
                    self._state = "between"
        if text:
            out.append("".join(text))
        if self._state == "args":
            self._flush_arguments(out)
        self.passed_on = self.passed_on or bool(out)
        return out

    def close(self, max_tokens: int) -> None:
        """The answer ended: a first call cut off before its arguments closed is an error,
        never a call with broken JSON."""
        if self._state in ("head", "args") and self._index == 0:
            raise EngineError(
                f"the answer stopped inside a tool call (max_tokens={max_tokens} reached?)",
                stage="llm",
            )

    def _emit(self, out: list[str | ToolCallDelta], delta: ToolCallDelta) -> None:
        (out if self._index == 0 and not self._answered else self._held).append(delta)

    def _flush_arguments(self, out: list[str | ToolCallDelta]) -> None:
        if self._unsent:
            self._emit(out, ToolCallDelta(self._index, "".join(self._unsent)))
            self._unsent.clear()

    def _finish_call(self, out: list[str | ToolCallDelta]) -> None:
        call = (self._name, json.loads(self._written))
        held, self._held = self._held, []
        if call in self._done or call in self._answered:
            self.repeating = True
            return
        out.extend(held)
        self._done.append(call)

    def _closes(self, ch: str) -> bool:
        """Follow the arguments' JSON nesting: does ``ch`` close them?"""
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif ch == "\\":
                self._escaped = True
            elif ch == '"':
                self._in_string = False
        elif ch == '"':
            self._in_string = True
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
            return self._depth == 0
        return False
