"""Chat backends: a local GGUF model via llama.cpp, and any OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

from voice.engines import Message
from voice.errors import EngineError, ModelError
from voice.threads import started_pool

_DONE = object()


class _Contexts:
    """llama.cpp contexts, each remembering the messages it last evaluated.

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
        self._free: list[tuple[Any, list[Message]]] = []
        self._changed = threading.Condition()

    def put(self, llama: Any, messages: Sequence[Message] = ()) -> None:
        with self._changed:
            self._free.append((llama, list(messages)))
            self._changed.notify()

    def take(self, messages: Sequence[Message]) -> Any:
        """The best free context; waits while every context is answering someone else."""
        with self._changed:
            while not self._free:
                self._changed.wait()
            best = max(range(len(self._free)), key=lambda i: (self._score(i, messages), -i))
            return self._free.pop(best)[0]

    def _score(self, i: int, messages: Sequence[Message]) -> int:
        shared = _shared(self._free[i][1], messages)
        return shared if shared > 1 else 0


def _shared(a: Sequence[Message], b: Sequence[Message]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError(
                "llama-cpp-python is not installed; run ./setup.sh (or: pip install llama-cpp-python)",
                model=name,
            ) from exc
        self._contexts = _Contexts()
        for _ in range(parallel):
            try:
                llama = Llama(
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
            self._contexts.put(llama)
        self.name = name
        # Its own threads, one per context: a generation holds its thread until the answer
        # ends (or, dropped, until its prompt is read), and on the shared pool a few of them
        # left Whisper and Piper calls queueing behind, which held the next answers longer.
        self._threads = started_pool(parallel, "castwork-llm")

    def _generate(
        self,
        messages: Sequence[Message],
        max_tokens: int,
        temperature: float,
        stop: threading.Event,
    ) -> Iterator[str]:
        llama = self._contexts.take(messages)
        try:
            chunks: Any = llama.create_chat_completion(
                messages=list(messages),
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
            )
            for chunk in chunks:
                if stop.is_set():  # barge-in or timeout: stop spending the cores
                    return
                if text := chunk["choices"][0]["delta"].get("content"):
                    yield text
        finally:
            self._contexts.put(llama, messages)

    async def stream(
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for piece in self._generate(messages, max_tokens, temperature, stop):
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except Exception as exc:
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, _DONE)

        worker = loop.run_in_executor(self._threads, produce)
        try:
            while (item := await pieces.get()) is not _DONE:
                if isinstance(item, Exception):
                    raise EngineError(
                        f"llama.cpp failed: {item}", stage="llm", model=self.name
                    ) from item
                assert isinstance(item, str)
                yield item
        finally:
            stop.set()
            # Do not wait for the thread: it notices `stop` at its next token.
            worker.add_done_callback(lambda f: f.exception())


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
        self, messages: Sequence[Message], *, max_tokens: int, temperature: float
    ) -> AsyncIterator[str]:
        import openai

        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=cast("list[ChatCompletionMessageParam]", list(messages)),
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
            )
            async for chunk in response:
                if chunk.choices and (text := chunk.choices[0].delta.content):
                    yield text
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
