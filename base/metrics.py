"""The one Prometheus registry of a Castwork process, served at ``/metrics``.

Not the process-wide default registry, so tests and embedded servers can be created repeatedly
without "duplicated timeseries" errors. Each package registers its own metrics here.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, generate_latest

from base import heap

REGISTRY = CollectorRegistry()
# Resources that must come back to baseline once sessions end (the soak benchmark watches them):
# process_resident_memory_bytes and process_open_fds from the collector, threads, tasks and
# the C heap in use (what a leak grows: glibc's arenas keep freed memory resident) here.
ProcessCollector(registry=REGISTRY)
THREADS = Gauge("castwork_threads", "Python threads alive in this process.", registry=REGISTRY)
THREADS.set_function(threading.active_count)
HEAP_IN_USE = Gauge(
    "castwork_heap_in_use_bytes",
    "Bytes allocated from the C heap (glibc's mallinfo2) and not freed; NaN without glibc.",
    registry=REGISTRY,
)
HEAP_IN_USE.set_function(heap.in_use_bytes)


def metrics_text() -> bytes:
    """The Prometheus text exposition of :data:`REGISTRY`."""
    return generate_latest(REGISTRY)
