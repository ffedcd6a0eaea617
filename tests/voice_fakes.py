"""Helpers for voice tests beyond the shipped harness (:mod:`voice.testing.harness`): event
validation against the openai package's models, and WER."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from voice.clients.realtime import RealtimeClient
from voice.monitoring.textnorm import word_errors

try:
    from openai.types.realtime import RealtimeServerEvent

    SERVER_EVENT: TypeAdapter[Any] | None = TypeAdapter(RealtimeServerEvent)
except ImportError:  # pragma: no cover
    SERVER_EVENT = None


def assert_valid(client: RealtimeClient) -> None:
    """Every server event validates against the openai package's own models."""
    assert SERVER_EVENT is not None
    for r in client.events:
        SERVER_EVENT.validate_python(r.event)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate as `castwork eval` counts it (:mod:`voice.monitoring.textnorm`)."""
    return word_errors(reference, hypothesis).rate
