"""Client secrets in a Redis every voice server shares (``voice.client_secret_store``).

Behind a balancer, the server that mints a page's secret is rarely the one the browser's
WebSocket reaches. Here a secret is one Redis key that expires with it, and spending it is
one MULTI of GET and DEL: of two servers presented the same secret at once, one gets it, the
other nothing (atomic on any Redis, no GETDEL needed). The same rules as in memory
(:mod:`voice.runtime.client_secrets`): single use, one 401 for unknown, used and expired,
at most ``capacity`` outstanding (counted in a sorted set by expiry, swept at each mint: a
bound on memory, not an exact count under concurrent minting).

Redis stores a SHA-256 of each secret, never the secret: whoever reads the store cannot
connect with what it holds. A Redis that cannot be reached is a 503 with a reason (the
client may try again), never a crash and never a secret that works twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from base.redact import mask_url
from voice.runtime.client_secrets import Grant, SecretRefused, full, new_value, unusable

NAMESPACE = "castwork:voice:client-secret"
_TIMEOUT_S = 2.0  # a handshake waits on this: a hung Redis must not hold it for long


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class RedisSecrets:
    """A :class:`~voice.runtime.client_secrets.SecretStore` in Redis at ``url``."""

    def __init__(self, url: str, capacity: int, *, namespace: str = NAMESPACE) -> None:
        self.url, self.capacity, self.namespace = url, capacity, namespace
        self._index = f"{namespace}:expiry"
        # Connects on first use, on the loop that uses it.
        self._redis = aioredis.from_url(
            url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S
        )

    def _key(self, digest: str) -> str:
        return f"{self.namespace}:{digest}"

    def _unreachable(self, exc: RedisError) -> SecretRefused:
        return SecretRefused(
            503, f"the client secret store ({mask_url(self.url)}) is unreachable: {exc}; try again"
        )

    async def mint(self, key: str, seconds: int, session: dict[str, Any], now: float) -> Grant:
        grant = Grant(new_value(), key, now + seconds, session)
        digest = _digest(grant.value)
        record = json.dumps({"key": key, "expires_at": grant.expires_at, "session": session})
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(self._index, "-inf", now)
                pipe.zcard(self._index)
                _, outstanding = await pipe.execute()
            if outstanding >= self.capacity:
                raise full()
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(digest), record, px=int(seconds * 1000))
                pipe.zadd(self._index, {digest: grant.expires_at})
                await pipe.execute()
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        return grant

    async def redeem(self, value: str, now: float) -> Grant:
        digest = _digest(value)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._key(digest))
                pipe.delete(self._key(digest))
                pipe.zrem(self._index, digest)
                raw, _, _ = await pipe.execute()
        except RedisError as exc:
            raise self._unreachable(exc) from exc
        if raw is None:
            raise unusable()
        record = json.loads(raw)
        if float(record["expires_at"]) <= now:  # this server's clock, as when in memory
            raise unusable()
        return Grant(value, str(record["key"]), float(record["expires_at"]), record["session"])

    async def aclose(self) -> None:
        await self._redis.aclose()
