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


class InputError(MediaError):
    """A merchant's input cannot be used (bad image, bad field): permanent, fail the job."""

    code = "bad_input"


class TemplateError(MediaError):
    """A template file is invalid: the message names the file and the field."""

    code = "bad_template"


class RenderCancelled(MediaError):
    """The job was cancelled while ffmpeg ran; not a failure, not retried."""

    code = "cancelled"
