"""Errors of the media package (a subtree of :class:`voice.errors.CastworkError`)."""

from __future__ import annotations

from pydantic import ValidationError

from voice.errors import CastworkError


def first_error(exc: ValidationError, *, default: str) -> tuple[str, str]:
    """(dotted field path, message) of a pydantic error, counting the others, for one line."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return loc or default, f"{first['msg']}{more}"


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
