"""The webhook outbox relay: every worker process moves finished jobs from the outbox (filled
by the job store in the same atomic step that finishes a job) to the queue.

An entry is moved to a processing list while it is relayed (``BLMOVE``) and removed once its
message is queued; entries a process left there when it died are put back in the outbox when
a worker process starts. A job may then be announced twice: ``webhook-id`` is the same, so a
receiver drops the repeat (Standard Webhooks are at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq

from workers.broker import REDIS_DOWN
from workers.store import JobStore

log = logging.getLogger(__name__)


class WebhookRelay(dramatiq.Middleware):
    def __init__(self, store: JobStore, send: Callable[[str, str], None]) -> None:
        self.store, self.send = store, send
        self.processing = store.outbox + ":processing"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="castwork-webhooks", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def recover(self) -> int:
        """Put entries left in the processing list back in the outbox; how many."""
        moved = 0
        while self.store.r.lmove(self.processing, self.store.outbox, "RIGHT", "LEFT"):
            moved += 1
        return moved

    def relay_one(self, wait_s: int) -> bool:
        """Queue one outbox entry's delivery (waiting up to ``wait_s`` for one; 0: none)."""
        r, outbox = self.store.r, self.store.outbox
        raw = (
            r.blmove(outbox, self.processing, wait_s, "LEFT", "RIGHT")
            if wait_s > 0  # BLMOVE's 0 waits for ever
            else r.lmove(outbox, self.processing, "LEFT", "RIGHT")
        )
        if raw is None:
            return False
        entry = raw.decode() if isinstance(raw, bytes) else str(raw)
        job_id, _, status = entry.partition(" ")
        try:
            self.send(job_id, status)
        except Exception:
            # Back to the outbox's head: relayed again on the next turn (or by another process).
            pipe = self.store.r.pipeline(transaction=True)
            pipe.lrem(self.processing, 1, entry)
            pipe.lpush(self.store.outbox, entry)
            pipe.execute()
            raise
        self.store.r.lrem(self.processing, 1, entry)
        return True

    def _loop(self) -> None:
        try:
            if moved := self.recover():
                log.info("webhook outbox: %d entries left by a stopped worker put back", moved)
        except REDIS_DOWN:
            pass  # the next start tries again; the entries wait
        while not self._stop.is_set():
            try:
                self.relay_one(1)
            except REDIS_DOWN as exc:
                log.warning("webhook outbox: Redis does not answer (%s)", exc)
                self._stop.wait(1.0)
            except Exception:  # a bug must not end the relay
                log.exception("webhook outbox relay failed")
                time.sleep(1.0)
