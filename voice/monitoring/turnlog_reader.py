"""Reading turn logs from disk or stdin: files, directories, rotated and gzipped files.

The I/O shell around :mod:`voice.monitoring.turnstats`. A directory means every turn log in it, oldest
first (``turns.jsonl.5`` ... ``turns.jsonl.1``, then ``turns.jsonl``), gzipped or not.
Damage inside a file (a truncated gzip stream, a line that is not a record) is counted and
skipped; a path that does not exist is an error for the caller to report.
"""

from __future__ import annotations

import bisect
import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from voice.monitoring.turnstats import BadLine, Parsed, Turn, parse_lines

_ROTATED = re.compile(r"^(?P<base>.+?\.jsonl)(?:\.(?P<n>\d+))?(?:\.gz)?$")


def log_files(path: Path, *, base: str | None = None) -> list[Path]:
    """``path`` itself, or the turn logs in a directory, oldest first (only those rotated
    from ``base``, e.g. ``turns.jsonl``, if given)."""
    if not path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {path}")
        return [path]
    found = []
    for p in path.iterdir():
        if p.is_file() and (m := _ROTATED.match(p.name)) and base in (None, m["base"]):
            # Higher rotation number = older; the live file (no number) is the newest.
            found.append((m["base"], -int(m["n"] or 0), p.name, p))
    return [p for *_, p in sorted(found)]


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"  # by content: rotated files may be renamed
    if gzipped:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _lines(name: str, stream: BinaryIO, bad: list[BadLine]) -> Iterator[tuple[str, int, bytes]]:
    number = 0
    try:
        for number, raw in enumerate(stream, 1):
            yield name, number, raw
    except (EOFError, OSError, zlib.error) as exc:  # a truncated or corrupt gzip stream
        bad.append(BadLine(name, number + 1, f"file unreadable from here on ({exc})"))


def read(paths: Iterable[Path], *, stdin: BinaryIO | None = None) -> Parsed:
    """Every turn in ``paths`` (each a file or a directory), then ``stdin`` if given."""
    files = [f for p in paths for f in log_files(p)]
    bad: list[BadLine] = []

    def lines() -> Iterator[tuple[str, int, bytes]]:
        for f in files:
            try:
                stream = _open(f)
            except OSError as exc:
                bad.append(BadLine(str(f), 0, f"cannot open ({exc.strerror or exc})"))
                continue
            with stream:
                yield from _lines(str(f), stream, bad)
        if stdin is not None:
            yield from _lines("<stdin>", stdin, bad)

    parsed = parse_lines(lines())
    parsed.bad.extend(bad)
    return parsed


class TurnLogTail:
    """The recent turns of a live turn log, kept in memory and refreshed cheaply.

    Each :meth:`refresh` reads only the bytes appended since the last one. When the log was
    rotated (another inode) or truncated, it reloads the live file and its rotations. Turns
    older than ``keep_s`` before the newest are dropped, and at most ``max_turns`` are kept,
    so a dashboard over a busy server costs bounded memory.
    """

    def __init__(self, path: Path, *, keep_s: float = 86_400, max_turns: int = 200_000) -> None:
        self.path, self.keep_s, self.max_turns = path, keep_s, max_turns
        self.turns: list[Turn] = []
        self.bad = 0
        self._inode: int | None = None
        self._offset = 0

    def refresh(self) -> list[Turn]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return self.turns
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._reload(st.st_ino)
        elif st.st_size > self._offset:
            self._read_new()
        return self.turns

    def _reload(self, inode: int) -> None:
        rotated = [f for f in log_files(self.path.parent, base=self.path.name) if f != self.path]
        parsed = read(rotated)
        self.turns, self.bad = parsed.turns, len(parsed.bad)
        self._inode, self._offset = inode, 0
        self._read_new()

    def _read_new(self) -> None:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        # Up to the last complete line; a half-written one is read next time.
        complete = data.rfind(b"\n") + 1
        if not complete:
            self._prune()
            return
        self._offset += complete
        lines = data[:complete].splitlines()
        parsed = parse_lines((str(self.path), 0, line) for line in lines)
        self.turns.extend(parsed.turns)
        self.bad += len(parsed.bad)
        self._prune()

    def _prune(self) -> None:
        if not self.turns:
            return
        self.turns.sort(key=lambda t: t.ts)  # nearly sorted already: linear
        start = bisect.bisect_left(self.turns, self.turns[-1].ts - self.keep_s, key=lambda t: t.ts)
        self.turns = self.turns[max(start, len(self.turns) - self.max_turns) :]
