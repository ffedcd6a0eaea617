"""The embedded models served over OpenAI-compatible HTTP (`castwork models serve`), so one
bigger machine can serve ASR, the LLM and TTS to many thin voice front-ends: ``app`` (the
endpoints) and ``wire`` (OpenAI's request and response shapes)."""

__all__ = ["app", "wire"]
