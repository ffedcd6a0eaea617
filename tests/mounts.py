"""Real mounts for fault tests: a tiny tmpfs is a disk that fills up, a read-only one refuses
every write.

Both are real kernel behaviour (ENOSPC, EROFS), not mocks, and both hold for root, which
ignores file modes: a ``chmod 0500`` directory does not stop root from writing, a read-only
mount does. Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is skipped, saying why.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(target: Path, *options: str) -> Iterator[Path]:
    """A fresh tmpfs mounted on ``target`` (created if missing) with mount ``options``
    (``size=200k``, ``ro``), unmounted on the way out whatever happened."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", ",".join(options or ("defaults",)), "castwork-test"]
    try:
        done = subprocess.run([*cmd, str(target)], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("the mount command is not installed (util-linux)")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root): {done.stderr.strip()}")
    try:
        yield target
    finally:
        # A process still holding a file there (it should not) makes umount fail: detach it
        # lazily then, so no mount outlives the test.
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=True)
