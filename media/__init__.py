"""Ad-video rendering: ``templates`` (the template model, sandboxed copy), ``job`` (a job's
spec), ``folder`` (its files and manifest), ``images``, ``fonts``, ``text`` (text drawn as
images), ``music`` and ``soundtrack``, ``narration`` (TTS and caption timing), ``plan`` (pure
timeline), ``graph`` (pure filter graph), ``ffmpeg`` (the only module that runs it),
``render``, ``pipeline`` (the idempotent job stages), ``settings``, ``errors``."""

__all__ = [
    "errors", "ffmpeg", "folder", "fonts", "graph", "images", "job", "music", "narration",
    "pipeline", "plan", "render", "settings", "soundtrack", "templates", "text",
]  # fmt: skip
