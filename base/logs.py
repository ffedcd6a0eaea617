"""Logging with session/turn/job ids on every line, as text or JSON lines.

Ids live in context variables, so every log call inside a session's task (and the worker
threads it starts with ``asyncio.to_thread``, which copies the context) carries them without
passing loggers around.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
turn_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("turn_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
_IDS = {"session_id": session_id, "turn_id": turn_id, "job_id": job_id}


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Attach ids (session_id=, turn_id=, job_id=) to log lines inside the block."""
    tokens = [(_IDS[k], _IDS[k].set(v)) for k, v in ids.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _IdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _IDS.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _IDS:
            if (value := getattr(record, name, None)) is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{k.removesuffix('_id')}={v}" for k in _IDS if (v := getattr(record, k, None))
        )
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if ids:
            text += f" [{ids}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was
    made: a replaced stderr (pytest's capture, a daemon's redirect) is followed, never a
    closed one written to."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(*, level: str = "INFO", json_lines: bool = False) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_castwork", False):
            root.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(_IdFilter())
    handler._castwork = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # faster-whisper logs every decode at INFO; our turn records already say it.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, root.level))
