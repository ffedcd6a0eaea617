"""The protocol and the session core: pure, I/O-free, importing no model runtime.

``protocol`` (the GA Realtime events), ``session`` (the turn state machine: events in, actions
out), ``turntaking`` (when a pause ends a turn), ``conversation`` (items to chat messages),
``chunker`` (speakable pieces of an answer), ``heard`` (words or Whisper noise), ``record``
(what a turn did and when)."""

__all__ = ["chunker", "conversation", "heard", "protocol", "record", "session", "turntaking"]
