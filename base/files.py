"""Atomic file writes: the one place for the rule that readers never see half a file.

A file is written under a temporary name beside its final one and renamed into place only when
complete (a rename is atomic within a filesystem). The temporary name is unique per attempt
(pid + random), so two deliveries of one message, or a killed attempt's orphan, never write the
same temporary file; orphans start with ``.`` and contain ``.part`` so sweeps can find them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

# Files readable by the group and others: a renderer may run as another user of the group.
FILE_MODE = 0o644


def temporary_name(final: Path) -> Path:
    """A unique name beside ``final`` for one attempt at writing it."""
    return final.with_name(f".{final.stem}.{os.getpid()}.{secrets.token_hex(4)}.part{final.suffix}")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place when the block ends
    without an error, remove it otherwise. For writers that want a path (ffmpeg)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        # missing_ok is not enough: a read-only mount answers EROFS even for a file that is
        # not there, and a failed clean-up must not hide the error that brought us here.
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(final: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file to write ``final``'s content into; it appears under ``final``,
    mode 0644, only once complete. ``durable`` syncs it to disk before the rename (for
    files whose loss after a crash would lose data, not only work)."""
    with atomic_path(final) as tmp:
        with open(tmp, "xb") as fh:
            yield fh
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)


def write_atomic(final: Path, data: bytes | str, *, durable: bool = False) -> None:
    """Write ``data`` (text is UTF-8) to ``final`` atomically."""
    with atomic_open(final, durable=durable) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
