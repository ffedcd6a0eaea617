"""Broker connection: a configured URL, or the local Redis that `castwork serve` manages."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

from voice.config import Settings

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"


def broker_url(settings: Settings) -> str:
    return settings.broker.url or LOCAL_REDIS_URL


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
