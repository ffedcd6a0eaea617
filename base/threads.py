"""Thread pools whose threads all start at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


def started_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A pool with all ``workers`` threads running now.

    Python's pool starts threads one by one as calls overlap and never stops them, so the
    thread count would creep up for hours and hide a real leak; started at once it stays flat
    and any growth means something."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    ready = threading.Barrier(workers + 1)
    for _ in range(workers):
        pool.submit(ready.wait)  # each waits: the pool has to start a new thread for the next
    ready.wait()
    return pool
