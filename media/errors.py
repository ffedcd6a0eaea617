"""Errors of the media package (a subtree of :class:`voice.errors.CastworkError`)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pydantic import ValidationError

from base.errors import CastworkError


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


class StorageError(MediaError):
    """A job's files cannot be written (the OS said why: ENOSPC, EROFS, EACCES)."""

    code = "storage_error"


class DiskFull(StorageError):
    """No space left (ENOSPC), or a quota reached (EDQUOT).

    Transient: space comes back (old jobs expire after ``jobs.keep_days``, other renders'
    temporary files go away, an operator frees some), so the stage is retried with backoff,
    but only within ``jobs.max_retries`` like any transient error: after that the job fails
    with this reason instead of retrying forever on a disk that stays full."""

    transient = True
    code = "disk_full"


class StorageUnwritable(StorageError):
    """A read-only file system (EROFS) or no permission (EACCES).

    Permanent: that is how the machine is set up (a mount, an owner), and a retry seconds
    later meets the same mount; the job fails at once, naming the cause, for an operator."""

    code = "storage_unwritable"


def storage_error(exc: OSError, what: str | None = None) -> StorageError | None:
    """The :class:`StorageError` that ``exc`` means, or None when it is not about storage.

    ``what`` says what failed; by default "cannot write <the file's name>" ("cannot open"
    for EACCES), never its full path: the message reaches the merchant through the API."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        cls: type[StorageError] = DiskFull
    elif exc.errno in (errno.EROFS, errno.EACCES):
        cls = StorageUnwritable
    else:
        return None
    if what is None:
        name = Path(os.fsdecode(exc.filename)).name if exc.filename else "the job's files"
        what = f"cannot {'open' if exc.errno == errno.EACCES else 'write'} {name}"
    reason = exc.strerror or os.strerror(exc.errno)
    return cls(f"{what}: {reason} ({errno.errorcode[exc.errno]})")
