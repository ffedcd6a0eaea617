"""The voice server at run time: ``server`` (WebSocket shell of the session core),
``turns`` (runs a response: LLM, tools, TTS, recovery), ``toolcalls`` (tool calls on the
wire), ``twilio`` (phone calls: Twilio Media Streams as a Realtime client), ``assembly``
(runtimes built from settings), ``latency`` (turn log and metrics)."""

__all__ = ["assembly", "latency", "server", "toolcalls", "turns", "twilio"]
