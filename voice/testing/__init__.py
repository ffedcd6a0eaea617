"""Fakes shipped with the package (as dramatiq ships its stub broker): ``fakes`` (scripted
engines), ``fake_openai`` (an OpenAI-compatible chat server that misbehaves on cue) and
``clips`` (a bundled utterance for smoke tests); ``harness`` (a voice server on a free port
with those engines, for tests and benches)."""

__all__ = ["clips", "fake_openai", "fakes", "harness"]
