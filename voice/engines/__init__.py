"""Models behind small contracts: ``contracts`` (the Protocols and data every engine speaks),
``vad`` (Silero), ``smart_turn`` (end of turn), ``asr`` (faster-whisper), ``llm`` (llama.cpp,
OpenAI-compatible), ``toolgrammar`` (tool-call grammars for llama.cpp), ``tts`` (Piper,
espeak-ng), ``registry`` (built-in models and where their weights come from), ``factory``
(engines built from settings)."""

__all__ = [
    "asr", "contracts", "factory", "llm", "registry", "smart_turn", "toolgrammar", "tts", "vad",
]  # fmt: skip
