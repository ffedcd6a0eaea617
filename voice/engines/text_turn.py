"""Does the transcript so far read finished? A small language model's guess at what comes next.

In a pause, Smart Turn hears how the speech sounds; Whisper writes what was said, but it puts
a full stop after any fragment ("I would like to book a table."), so the punctuation says
little. A language model reading the words alone does better: after "what is the best way to
get" it expects more words; after "... to downtown" it expects the message to end. (LiveKit's
turn detector reads the same signal from a fine-tuned Qwen; here an instruction-tuned model
is used as shipped.)

The words are lower-cased and stripped of punctuation, put in ChatML as the user's message
(after the agent's last words, when there are some: an answer to a question is read as one),
and the model's probability that the next token ends the message (a full stop, "?", "!", a
newline or the end-of-message token) is the answer. (A system message saying the words are a
caller's transcribed speech changed nothing on bench/turn_taking.py's dev half: none is sent.)
One forward pass of ~20 tokens: ~50-60 ms for SmolLM2-135M on two threads here. Blocking: call
it off the event loop.
"""

from __future__ import annotations

import ctypes
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from base.errors import ModelError
from voice.engines.llm import open_gguf

# What may follow a finished message, as the tokenizer writes it.
_ENDINGS = frozenset(
    [".", "?", "!", "\n", ".\n", "?\n", "!\n", "\n\n", ".\n\n", "?\n\n", "<|im_end|>"]
)
_NOT_WORDS = re.compile(r"[^\w\s']+")
_MAX_CHARS = 600  # the end of a long turn is what matters; the context holds it


def _prompt(before: str | None) -> str:
    """The ChatML up to the caller's words: the agent's last words first, when there are some."""
    prompt = ""
    if before:
        prompt = f"<|im_start|>assistant\n{before.strip()[-_MAX_CHARS:]}<|im_end|>\n"
    return prompt + "<|im_start|>user\n"


def words_of(text: str) -> str:
    """The transcript as the model reads it: lower case, no punctuation, one space apart."""
    return " ".join(_NOT_WORDS.sub(" ", text.lower()).split())


class TextTurn:
    """A ChatML GGUF model (the embedded SmolLM2-135M, or Qwen2.5) as an end-of-turn judge."""

    def __init__(
        self, model_path: Path, *, name: str, threads: int = 2, context_tokens: int = 512
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError(
                "llama-cpp-python is not installed; run ./setup.sh", model=name
            ) from exc
        self._llm: Any = open_gguf(
            Llama,
            model_path,
            name=name,
            context_tokens=context_tokens,
            n_threads=threads,
            n_threads_batch=threads,
        )
        template = str(self._llm.metadata.get("tokenizer.chat_template", ""))
        if "<|im_start|>" not in template:
            raise ModelError(
                f"{model_path}: vad.text_turn_model needs a ChatML model (SmolLM2, Qwen2.5); "
                "this one's chat template is another",
                model=name,
            )
        vocab = self._llm.n_vocab()
        self._endings = np.array(
            [i for i in range(vocab) if self._piece(i) in _ENDINGS], dtype=np.int64
        )
        if not len(self._endings):
            raise ModelError(f"{model_path}: no end-of-message tokens found", model=name)
        self._vocab = vocab
        self.name = name
        self._lock = threading.Lock()  # one llama.cpp context: one reader at a time

        self.probability("hello")  # the first pass pays for setting up (~250 ms): not a caller

    def _piece(self, token: int) -> str:
        piece: bytes = self._llm.detokenize([token], special=True)
        return piece.decode("utf-8", "replace")

    def probability(self, text: str, before: str | None = None) -> float:
        """P(the message ends after ``text``), the agent having said ``before``."""
        prompt = _prompt(before) + words_of(text)[-_MAX_CHARS:]
        with self._lock:
            self._eval(prompt)
            logits = self._last_logits()
        z = logits - logits.max()
        p = np.exp(z)
        return float(p[self._endings].sum() / p.sum())

    def prime(self, before: str | None) -> None:
        """Read the agent's words ahead of the caller's pause, so that the pause's reading
        costs only the caller's words (~4 ms a token here: after a 10-word greeting, a
        reading took 78 ms cold and 23 ms read ahead, bench/turn_taking.py)."""
        with self._lock:
            self._eval(_prompt(before))

    def _eval(self, prompt: str) -> None:
        """Bring the context to ``prompt``, evaluating only what follows the longest prefix it
        already holds (the agent's words, the caller's words at the last pause): llama.cpp
        drops the cache past that point."""
        llm = self._llm
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        held = llm.input_ids[: llm.n_tokens]
        same = 0
        # At least the last token is evaluated again: its logits are the answer.
        while same < min(len(held), len(tokens) - 1) and held[same] == tokens[same]:
            same += 1
        llm.n_tokens = same
        llm.eval(tokens[same:])

    def _last_logits(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        # Without logits_all, llama-cpp-python keeps no copy of the last position's logits
        # (its sampler reads them in place); read them from the context.
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self._llm.ctx, -1)
        array = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self._vocab,)
        )
        return array.astype(np.float64)

    def close(self) -> None:
        self._llm.close()
