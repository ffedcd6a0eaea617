"""Errors of the media package (a subtree of :class:`voice.errors.CastworkError`)."""

from __future__ import annotations

from voice.errors import CastworkError


class MediaError(CastworkError):
    code = "media_error"


class FfmpegMissing(MediaError):
    code = "ffmpeg_missing"


class RenderError(MediaError):
    """ffmpeg failed or timed out; transient only when the cause may pass (a timeout)."""

    code = "render_error"
