"""The C heap under the native models, through glibc (nothing elsewhere: musl, macOS).

llama.cpp, CTranslate2 and ONNX Runtime allocate and free large buffers on every turn from
many threads, and glibc keeps much of what they free in its per-thread arenas, even after a
trim: resident memory then says little about what is in use. ``trim`` gives back the free
pages it can; ``in_use_bytes`` is what is allocated, which a leak grows and an allocator's
keeping does not (``malloc_stats`` after a short soak of the server, two callers a wave:
arenas held 350 MiB more than at its baseline, 1.5 MiB more in use; RSS +126 MiB).
ctypes drops the GIL for both calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes from sbrk
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in mmapped blocks: all in use
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use in the arenas
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
_TRIM = getattr(_LIBC, "malloc_trim", None)
_MALLINFO2 = getattr(_LIBC, "mallinfo2", None)  # glibc >= 2.33
if _MALLINFO2 is not None:
    _MALLINFO2.restype = _Mallinfo2
    _MALLINFO2.argtypes = []


def trim() -> None:
    """Return the heap's free pages to the OS (blocks: call it off the event loop)."""
    if _TRIM is not None:
        _TRIM(0)


def in_use_bytes() -> float:
    """Bytes the C heap has handed out and not had back, over all arenas; NaN where glibc's
    ``mallinfo2`` is missing."""
    if _MALLINFO2 is None:
        return float("nan")
    info = _MALLINFO2()
    return float(info.uordblks + info.hblkhd)
