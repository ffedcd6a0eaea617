"""Real-time voice agents over the OpenAI Realtime protocol, in rooms:

``core``        the protocol events and the I/O-free session core (turns, turn-taking, records)
``engines``     model contracts and engines: VAD, end-of-turn, ASR, LLM, TTS, registry, factory
``tools``       server-side tools the agent may call (HTTP, MCP)
``runtime``     the WebSocket server, the response runner, turn logs and metrics
``modelserver`` the engines over OpenAI-compatible HTTP (`castwork models serve`)
``learning``    failure cases, PII masking, lineage, experiments (A/B arms)
``clients``     a Realtime client of our own and the microphone `castwork talk`
``monitoring``  turn-log statistics, evaluation and load tools
``testing``     fakes and harnesses shared by tests and benches

Beside them: ``settings`` (the voice sections), ``errors`` and ``audio`` (PCM in one format).
"""

__all__ = [
    "audio", "clients", "core", "engines", "errors", "learning", "modelserver", "monitoring",
    "runtime", "settings", "testing", "tools",
]  # fmt: skip
