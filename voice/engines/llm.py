"""Chat backends: a local GGUF model via llama.cpp, and any OpenAI-compatible server.

Tools: the OpenAI-compatible backend passes them to the server and reads the streamed
``delta.tool_calls``. The local backend renders them into the prompt (with the GGUF's own
chat template when it knows tools, else with a system-prompt section of ours) and decodes
under a grammar (:mod:`voice.engines.toolgrammar`): the answer is either spoken text or calls whose
arguments match their schema, never JSON that is merely hoped for.
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import functools
import math
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

from base.errors import ModelError
from base.threads import started_pool
from voice.engines.contracts import Message, ToolCallDelta, ToolChoice, ToolSpec
from voice.engines.toolgrammar import CallReader, answered, callable_tools, grammar, prompt_messages
from voice.errors import EngineError

_DONE = object()


class _Contexts:
    """llama.cpp contexts, each remembering the prompt (messages) it last evaluated.

    A request takes the free context whose remembered messages are the longest prefix of its
    own: llama.cpp then evaluates only the new tail. Taking any free one let two callers swap
    two contexts every turn, each re-reading the other's whole history: over a dozen turns the
    first token went from 0.2 to 2.2 s and then past the timeout. Ties go to the context that
    has waited longest: the one another caller used last is that caller's cache, and taking it
    (a caller's second request, while its speculative one holds its own context) started the
    same swapping.

    Only a match past the first message counts: every conversation starts with the same system
    prompt, so a context that had evaluated one (another caller's, say) beat the ones never
    used, and two new callers kept evicting each other from one context while three sat idle:
    their first token grew with their history (0.2 to 2.4 s by the sixth turn).
    """

    def __init__(self) -> None:
        self._free: list[tuple[Any, list[object]]] = []
        self._changed = threading.Condition()

    def put(self, llama: Any, prompt: Sequence[object] = ()) -> None:
        with self._changed:
            self._free.append((llama, list(prompt)))
            self._changed.notify()

    def take(self, prompt: Sequence[object]) -> Any:
        """The best free context; waits while every context is answering someone else."""
        with self._changed:
            while not self._free:
                self._changed.wait()
            best = max(range(len(self._free)), key=lambda i: (self._score(i, prompt), -i))
            return self._free.pop(best)[0]

    def take_free(self) -> list[Any]:
        """Every context nobody is using (all of them, before the first caller)."""
        with self._changed:
            taken = [llama for llama, _ in self._free]
            self._free.clear()
            return taken

    def _score(self, i: int, prompt: Sequence[object]) -> int:
        shared = _shared(self._free[i][1], prompt)
        return shared if shared > 1 else 0


def _shared(a: Sequence[object], b: Sequence[object]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def open_gguf(
    llama_class: Any,
    model_path: Path,
    *,
    name: str,
    context_tokens: int,
    n_threads: int,
    n_threads_batch: int,
) -> Any:
    """One llama.cpp context of ``model_path`` (``llama_class``: llama-cpp-python's ``Llama``
    or a subclass), quiet, freed before interpreter teardown; :class:`ModelError` if the file
    is not a model llama.cpp loads."""
    try:
        llama = llama_class(
            model_path=str(model_path),
            n_ctx=context_tokens,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch,
            verbose=False,
        )
    except Exception as exc:  # llama.cpp raises ValueError on a bad file
        raise ModelError(f"cannot load GGUF model {model_path}: {exc}", model=name) from exc
    # Free the model before interpreter teardown, when llama.cpp's own __del__ fails.
    atexit.register(llama.close)
    return llama


@functools.cache
def _checked_llama() -> Any:
    """llama-cpp-python's ``Llama``, sampling under a grammar the way llama.cpp's own server
    does: draw a token without the grammar, and only if the grammar refuses it draw again
    with the grammar applied to the whole vocabulary. llama-cpp-python applies it to every
    token of the vocabulary at every step, which made each token of a tool turn cost 1.7x
    (SmolLM2, 49k tokens) to 2x (Qwen2.5, 151k) a plain one. Greedy answers are the same
    either way (the best token is either allowed, or the best allowed one is drawn);
    tests/test_llm_tools.py checks that. Without a grammar nothing changes."""
    from llama_cpp import Llama

    class CheckedLlama(Llama):
        def _init_sampler(self, **kwargs: Any) -> Any:  # type: ignore[override]  # keywords only, as Llama calls it
            grammar = kwargs.pop("grammar", None)
            chain = super()._init_sampler(**kwargs)
            if grammar is None:
                return chain
            return _CheckedSampler(chain, grammar, self._model.vocab, self.n_vocab())

    return CheckedLlama


class _CheckedSampler:
    """A sampler chain plus a grammar, checked after the draw (see :func:`_checked_llama`).
    Duck-types what ``Llama.sample`` calls: ``sample(ctx, idx)``."""

    def __init__(self, chain: Any, grammar: Any, vocab: Any, n_vocab: int) -> None:
        import llama_cpp
        import numpy as np

        self._lib, self._chain = llama_cpp, chain
        self._grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode(), grammar._root.encode()
        )
        if not self._grammar:
            raise ValueError("llama.cpp refused the grammar")
        dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
        assert dtype.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._all = np.zeros(n_vocab, dtype=dtype)
        self._one = np.zeros(1, dtype=dtype)
        self._n_vocab = n_vocab

    def _candidates(self, data: Any) -> Any:
        return self._lib.llama_token_data_array(
            data=data.ctypes.data_as(self._lib.llama_token_data_p),
            size=len(data),
            selected=-1,
            sorted=False,
        )

    def _draw(self, logits: Any, constrained: bool) -> int:
        # Every field, every draw: the samplers sort the candidates in place.
        self._all["id"], self._all["logit"], self._all["p"] = self._ids, logits, 0.0
        cur = self._candidates(self._all)
        if constrained:
            self._lib.llama_sampler_apply(self._grammar, ctypes.byref(cur))
        self._lib.llama_sampler_apply(self._chain.sampler, ctypes.byref(cur))
        return int(cur.data[cur.selected].id)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        import numpy as np

        pointer = self._lib.llama_get_logits_ith(ctx.ctx, idx)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        token = self._draw(logits, constrained=False)
        self._one[0] = (token, 0.0, 0.0)
        self._lib.llama_sampler_apply(self._grammar, ctypes.byref(self._candidates(self._one)))
        if not math.isfinite(self._one[0]["logit"]):  # the grammar refuses it
            token = self._draw(logits, constrained=True)
        self._lib.llama_sampler_accept(self._grammar, token)
        self._lib.llama_sampler_accept(self._chain.sampler, token)
        return token

    def __del__(self) -> None:
        if getattr(self, "_grammar", None):
            self._lib.llama_sampler_free(self._grammar)
            self._grammar = None


def _prompt_key(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[object]:
    """What a context evaluates: the tools render into the system prompt, so they travel
    with the first message (a context that read other tools shares no prefix)."""
    if not messages:
        return []
    return [(tuple(tools), messages[0]), *messages[1:]]


class LlamaCppChat:
    """A GGUF model in this process, generating in worker threads.

    ``parallel`` contexts (each a llama.cpp instance, ~100 MB for the embedded model) serve
    that many answers at once; with one, every session's answer queues behind the others'.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        name: str,
        n_threads: int = 1,
        n_threads_batch: int = 2,
        context_tokens: int = 2048,
        parallel: int = 1,
    ) -> None:
        try:
            Llama = _checked_llama()
        except ImportError as exc:
            raise ModelError(
                "llama-cpp-python is not installed; run ./setup.sh (or: pip install llama-cpp-python)",
                model=name,
            ) from exc
        self._contexts = _Contexts()
        for _ in range(parallel):
            llama = open_gguf(
                Llama,
                model_path,
                name=name,
                context_tokens=context_tokens,
                n_threads=n_threads,
                n_threads_batch=n_threads_batch,
            )
            self._contexts.put(llama)
        self.name = name
        # Does the GGUF's own chat template render tools (Qwen2.5's does)? llama-cpp-python
        # hands ``tools`` to a Jinja template it found in the file; a built-in format it
        # guessed instead (chatml, llama-3) would drop them silently.
        template = str(llama.metadata.get("tokenizer.chat_template", ""))
        self.template_knows_tools = llama.chat_format == "chat_template.default" and (
            "tools" in template
        )
        # Its own threads, one per context: a generation holds its thread until the answer
        # ends (or, dropped, until its prompt is read), and on the shared pool a few of them
        # left Whisper and Piper calls queueing behind, which held the next answers longer.
        self._threads = started_pool(parallel, "castwork-llm")

    def warm(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> None:
        """Read ``messages`` (the system prompt every session starts with) and ``tools`` into
        every context before the first caller: once, then the state copied to the others.

        Cold, each context read it on its first turn: a tools prompt took Qwen2.5 0.5B 2.4 s
        on one thread, against the 2.5 s first-token deadline, and with four contexts the
        first four tool turns of a fresh server got the apology. Blocking (seconds)."""
        prompt, native_tools = prompt_messages(messages, tools, self.template_knows_tools)
        extra: dict[str, Any] = {"tools": native_tools} if native_tools else {}
        contexts = self._contexts.take_free()
        try:
            if not contexts:
                return
            first = contexts[0]
            first.create_chat_completion(messages=prompt, max_tokens=1, temperature=0.0, **extra)
            state = first.save_state()
            for other in contexts[1:]:
                other.load_state(state)  # a copy of the KV cache: milliseconds
        finally:
            for llama in contexts:
                self._contexts.put(llama, _prompt_key(messages, tools))

    def _generate(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        stop: threading.Event,
        *,
        tools: Sequence[ToolSpec] = (),
        rules: str | None = None,
        words_only: bool = False,
    ) -> Iterator[str]:
        """Text as the model writes it, under the grammar ``rules`` when given."""
        from llama_cpp.llama_grammar import LlamaGrammar

        prompt, native_tools = prompt_messages(
            messages, tools, self.template_knows_tools, words_only=words_only
        )
        extra: dict[str, Any] = {}
        if native_tools:
            extra["tools"] = native_tools
        if rules is not None:
            extra["grammar"] = LlamaGrammar.from_string(rules, verbose=False)
        key = _prompt_key(messages, tools)
        llama = self._contexts.take(key)
        try:
            chunks: Any = llama.create_chat_completion(
                messages=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
                **extra,
            )
            for chunk in chunks:
                if stop.is_set():  # barge-in or timeout: stop spending the cores
                    return
                if text := chunk["choices"][0]["delta"].get("content"):
                    yield text
        finally:
            self._contexts.put(llama, key)

    def _pieces(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        stop: threading.Event,
        tools: Sequence[ToolSpec],
        tool_choice: ToolChoice,
        parallel_tool_calls: bool,
    ) -> Iterator[str | ToolCallDelta]:
        if not tools:  # a plain turn: no grammar, no parsing, as fast as before
            yield from self._generate(messages, max_tokens, temperature, stop)
            return
        done = answered(messages)
        if tool_choice == "auto" and {t.name for t in tools} <= {name for name, _ in done}:
            # Every tool offered was called since the user spoke and its result is in hand:
            # words only, at once. Offered calls, Qwen2.5 0.5B called the same tool again
            # nearly every time; the repeat was dropped and a words-only pass run after it,
            # ~1 s of a tool turn spent writing a call nobody would make.
            words = grammar(tools, "none", parallel=False)
            yield from self._generate(
                messages, max_tokens, temperature, stop, tools=tools, rules=words, words_only=True
            )
            return
        rules = grammar(tools, tool_choice, parallel=parallel_tool_calls)
        reader = CallReader(done)
        for text in self._generate(
            messages,
            max_tokens,
            temperature,
            stop,
            tools=tools,
            rules=rules,
            words_only=tool_choice == "none",
        ):
            yield from reader.feed(text)
            if reader.repeating:  # the model calls again what it called: the answer is done
                break
        if stop.is_set():
            return
        if reader.repeating and not reader.passed_on:
            # It only repeated a call whose result it has: that result wants words.
            words = grammar(tools, "none", parallel=False)
            yield from self._generate(
                messages, max_tokens, temperature, stop, tools=tools, rules=words, words_only=True
            )
            return
        reader.close(max_tokens)

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
    ) -> AsyncIterator[str | ToolCallDelta]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for piece in self._pieces(
                    messages,
                    max_tokens,
                    temperature,
                    stop,
                    tools,
                    tool_choice,
                    parallel_tool_calls,
                ):
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except Exception as exc:
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, _DONE)

        worker = loop.run_in_executor(self._threads, produce)
        try:
            while (item := await pieces.get()) is not _DONE:
                if isinstance(item, EngineError):  # ours (a call cut off, a bad tool_choice)
                    item.fields.setdefault("model", self.name)
                    raise item
                if isinstance(item, Exception):
                    raise EngineError(
                        f"llama.cpp failed: {item}", stage="llm", model=self.name
                    ) from item
                assert isinstance(item, str | ToolCallDelta)
                yield item
        finally:
            stop.set()
            # Do not wait for the thread: it notices `stop` at its next token.
            worker.add_done_callback(lambda f: f.exception())


def _openai_tool_choice(choice: ToolChoice) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


class OpenAIChat:
    """Any server that speaks OpenAI chat completions with streaming (vLLM, llama.cpp server...)."""

    def __init__(
        self, url: str, *, model: str, name: str, api_key: str | None = None, timeout_s: float = 30
    ) -> None:
        from openai import AsyncOpenAI

        self.name = name
        self._model = model
        self._client = AsyncOpenAI(
            base_url=url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=0
        )

    async def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = "auto",
        parallel_tool_calls: bool = True,
    ) -> AsyncIterator[str | ToolCallDelta]:
        import openai

        extra: dict[str, Any] = {}
        if tools:  # without tools, the request is exactly what it was before tools existed
            callable_tools(tools, tool_choice)  # a wrong choice fails here, not as a 400
            extra = {
                "tools": [spec.openai() for spec in tools],
                "tool_choice": _openai_tool_choice(tool_choice),
                "parallel_tool_calls": parallel_tool_calls,
            }
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=cast("list[ChatCompletionMessageParam]", list(messages)),
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
                **extra,
            )
            async for chunk in response:
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    yield delta.content
                for call in delta.tool_calls or ():
                    fn = call.function
                    name, arguments = (fn.name, fn.arguments or "") if fn else (None, "")
                    if call.id or name or arguments:
                        yield ToolCallDelta(call.index, arguments, call.id, name)
        except openai.OpenAIError as exc:
            raise EngineError(f"{self.name} failed: {exc}", stage="llm", model=self.name) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A 200 whose stream is not the protocol (an HTML error page, cut JSON): the SDK
            # lets the decoder's error through as it is.
            raise EngineError(
                f"{self.name} sent a malformed stream: {type(exc).__name__}: {exc}",
                stage="llm",
                model=self.name,
            ) from exc

    async def aclose(self) -> None:
        await self._client.close()
