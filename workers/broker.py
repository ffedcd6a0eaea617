"""Broker connection: a configured URL, or the local Redis that `castwork serve` manages."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Retries

from workers.settings import Settings

if TYPE_CHECKING:
    from dramatiq import Broker, Message
    from dramatiq.broker import Consumer, MessageProxy

log = logging.getLogger(__name__)

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"

# Redis does not answer: refused or reset (a restart), timed out, or still loading its
# append-only file after a restart (BusyLoadingError is a ConnectionError).
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)

T = TypeVar("T")


def broker_url(settings: Settings) -> str:
    return settings.broker.url or LOCAL_REDIS_URL


def store_url(settings: Settings) -> str:
    """Redis for job records (status, progress, idempotency keys)."""
    if settings.jobs.store_url:
        return settings.jobs.store_url
    url = broker_url(settings)
    return url if url.startswith(("redis://", "rediss://")) else LOCAL_REDIS_URL


def ping(url: str, *, timeout_s: float = 2.0) -> str:
    """Check the broker answers; return its version string. Raises OSError if not."""
    parsed = urlparse(url)
    if parsed.scheme.startswith("redis"):
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        try:
            client.ping()
            info = client.info("server")
            return f"redis {info.get('redis_version', '?')}"
        except redis.RedisError as exc:
            raise OSError(
                f"Redis at {parsed.hostname}:{parsed.port or 6379} does not answer: {exc}"
            ) from exc
        finally:
            client.close()
    # AMQP: a TCP connect is enough to know the broker is there; dramatiq does the rest.
    with socket.create_connection(
        (parsed.hostname or "127.0.0.1", parsed.port or 5672), timeout=timeout_s
    ):
        return "amqp (port open)"


# How often (per million broker commands) a consumer sweeps for dead workers' messages. The
# default (1 in 1000) can leave a killed worker's message parked for minutes on a quiet queue;
# one in four costs a small Lua loop (a range query over a handful of workers) and brings
# it back within a second or two of the heartbeat timeout.
MAINTENANCE_CHANCE = 250_000


def make_broker(settings: Settings, url: str | None = None) -> Broker:
    """The dramatiq broker for ``url`` (default: the configured or local Redis)."""
    from dramatiq.middleware import CurrentMessage, default_middleware

    url = url or broker_url(settings)
    # dramatiq's defaults, with PatientRetries in Retries' place (same options, same order).
    middleware = [PatientRetries() if m is Retries else m() for m in default_middleware]
    broker: Broker
    if url.startswith(("redis://", "rediss://")):
        broker = DurableRedisBroker(  # type: ignore[no-untyped-call]
            url=url,
            namespace="castwork-dramatiq",
            heartbeat_timeout=int(settings.jobs.heartbeat_timeout_s * 1000),
            maintenance_chance=MAINTENANCE_CHANCE,
            middleware=middleware,
        )
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url, middleware=middleware)
    broker.add_middleware(CurrentMessage())
    return broker


def until_redis_answers(call: Callable[[], T], *, what: str, max_pause_s: float = 5.0) -> T:
    """``call()``, tried again (pausing 0.2 s, doubling up to ``max_pause_s``) for as long as
    Redis does not answer; one warning, then one every 30 s while it lasts.

    For work that must not be dropped and cannot be put anywhere else meanwhile: the queue
    and the job records are in that Redis. It waits as long as it takes, as dramatiq does for
    its own acks; a worker stopped meanwhile leaves its message unacked, to be redelivered."""
    pause, warned = 0.2, -1e9
    while True:
        try:
            return call()
        except REDIS_DOWN as exc:
            if time.monotonic() - warned >= 30.0:
                warned = time.monotonic()
                log.warning("%s: Redis does not answer (%s); waiting for it", what, exc)
            time.sleep(pause)
            pause = min(max_pause_s, pause * 2)


class _PatientEnqueue:
    """A broker whose ``enqueue`` waits out a Redis outage (everything else passed through)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        return until_redis_answers(
            lambda: self._broker.enqueue(message, delay=delay),
            what=f"retry of {message.actor_name}{tuple(message.args)}",
        )


class PatientRetries(Retries):
    """dramatiq's Retries, whose enqueue of the retry survives a Redis outage.

    Stock Retries sends the retry from ``after_process_message``. With Redis down that send
    raises; dramatiq logs it and carries on, and once Redis is back the worker acks the
    original message: the retry never existed, the job stays "running" forever (found by
    tests/test_ad_faults.py). Here the send waits for Redis; if the worker is stopped while
    it waits, the original is still unacked and will be redelivered: at least once, never
    zero times."""

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        super().after_process_message(  # type: ignore[no-untyped-call]
            _PatientEnqueue(broker), message, result=result, exception=exception
        )


class DurableRedisBroker(RedisBroker):
    """dramatiq's RedisBroker, whose delayed messages survive a Redis restart.

    A worker keeps the delayed messages it fetched (retries waiting out their backoff) in
    its consumer thread's memory, and Redis keeps their ids in that worker's ack set. On a
    connection error the consumer thread drops that memory (right for RabbitMQ, which
    redelivers unacked messages), and Redis hands out nothing in an ack set again until the
    worker is seen dead: a job whose retry was waiting stays "running" for as long as the
    worker lives (dramatiq issue #527; found again by tests/test_ad_faults.py).

    dramatiq starts a new consumer after every connection error, from that same thread. So
    a delay-queue consumer, as it starts, first puts back whatever its ack set still holds:
    none of it is in that thread's memory any more. And a requeue that meets a Redis that is
    down raises a connection error, which dramatiq retries, not an "unexpected" error, which
    would end the consumer thread for good.
    """

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        if queue_name.endswith(".DQ"):
            acks = f"{self.namespace}:__acks__.{self.broker_id}.{queue_name}"
            try:
                orphans = self.client.smembers(acks)
            except REDIS_DOWN as exc:
                raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
            if orphans:
                log.warning("putting back %d delayed message(s) after a reconnect", len(orphans))
                self.do_requeue(queue_name, *orphans)
        consumer: Consumer = super().consume(queue_name, prefetch, timeout)
        return consumer

    def do_requeue(self, queue_name: str, *message_ids: str | bytes) -> Any:
        try:
            return self._dispatch("requeue")(queue_name, *message_ids)  # type: ignore[no-untyped-call]
        except REDIS_DOWN as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        # Broker.close is dramatiq's hook for this (a worker calls it on the way out); the
        # stock RedisBroker leaves its pool's sockets to the garbage collector.
        self.client.connection_pool.disconnect()
