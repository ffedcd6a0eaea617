"""What the ``dramatiq`` command loads: ``dramatiq workers.app:broker``.

Settings come from the environment / ``CASTWORK_CONFIG`` like every other entry point;
``castwork worker`` and ``castwork serve`` start dramatiq with this module.
"""

from __future__ import annotations

from base.logs import configure_logging
from media.pipeline import NarrationEngines
from workers.actors import WEBHOOK, Context, declare, enqueue
from workers.broker import make_broker, store_url
from workers.retention import Housekeeping
from workers.settings import load_settings
from workers.storage import open_storage
from workers.store import JobStore
from workers.webhooks.outbox import WebhookRelay

settings = load_settings()
configure_logging(level=settings.log.level, json_lines=settings.log.json_lines)
broker = make_broker(settings)
store = JobStore.from_url(store_url(settings))
storage = open_storage(settings)
actors = declare(Context(settings, store, broker, NarrationEngines(settings), storage))
# Retention passes (workers.retention); finished jobs' webhooks from the outbox to the queue.
broker.add_middleware(Housekeeping(settings, store, storage))
broker.add_middleware(
    WebhookRelay(store, lambda job_id, status: enqueue(broker, WEBHOOK, job_id, status))
)
