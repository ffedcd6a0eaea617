"""Clients of our own server: ``realtime`` (an asyncio Realtime client) and ``talk`` (the
microphone conversation of `castwork talk`)."""

__all__ = ["realtime", "talk"]
