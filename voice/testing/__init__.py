"""Fakes shipped with the package (as dramatiq ships its stub broker): ``fakes`` (scripted
engines) and ``fake_openai`` (an OpenAI-compatible chat server that misbehaves on cue)."""

__all__ = ["fake_openai", "fakes"]
