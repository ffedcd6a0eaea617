"""Broker connection: a configured URL, or the local Redis that `castwork serve` manages."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from voice.config import Settings

if TYPE_CHECKING:
    from dramatiq import Broker

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


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
        import redis

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
    from dramatiq.middleware import CurrentMessage

    url = url or broker_url(settings)
    broker: Broker
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=url,
            namespace="castwork-dramatiq",
            heartbeat_timeout=int(settings.jobs.heartbeat_timeout_s * 1000),
            maintenance_chance=MAINTENANCE_CHANCE,
        )
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    broker.add_middleware(CurrentMessage())
    return broker
