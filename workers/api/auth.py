"""Who is asking: merchant keys, and signed download links for what cannot send a header."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping

from pydantic import SecretStr

from base.access import find_key, is_loopback
from base.errors import ConfigError
from workers.api.errors import unauthorized
from workers.settings import Settings
from workers.store import JobRecord

LOCAL_MERCHANT = "local"
# Signed download links live 6 to 7 hours: the expiry is rounded up to the hour so that a
# page polling a job gets the same URL each time (and the browser keeps its cached video).
_LINK_TTL_S = 6 * 3600
_LINK_ROUND_S = 3600
LINK_SECRET_FILE = "link-secret"


def keys_required(settings: Settings) -> bool:
    """Whether the API must have keys: whenever it can be reached from another machine."""
    return not is_loopback(settings.api.host)


class Keys:
    """Merchant API keys: the one place that compares them."""

    def __init__(self, keys: Mapping[str, SecretStr], *, required: bool) -> None:
        if required and not keys:
            raise ConfigError(
                "api.keys [CASTWORK_API__KEYS]",
                "required when the API is reachable from other machines (api.host is not "
                "a loopback address)",
            )
        self._keys = {m: k.get_secret_value().encode() for m, k in keys.items()}

    @property
    def open(self) -> bool:
        """No keys configured (loopback only): everyone is the merchant "local"."""
        return not self._keys

    def has(self, merchant: str) -> bool:
        return merchant in self._keys

    def merchant_for(self, key: str) -> str | None:
        return find_key(key, self._keys)

    def authenticate(self, bearer: str | None, api_key: str | None) -> str | None:
        """The merchant for the presented key; None when no key was presented."""
        if self.open:
            return LOCAL_MERCHANT
        given = bearer or api_key
        if not given:
            return None
        merchant = self.merchant_for(given)
        if merchant is None:
            raise unauthorized("the API key is not valid")
        return merchant


class Links:
    """Download URLs for a job's files: plain when the API is open, signed otherwise.

    The signing key is the link secret, derived per merchant (an HMAC of the merchant id), so
    that it holds nothing a merchant knows. A merchant whose key is withdrawn gets no link,
    and the links already handed out stop working with it."""

    def __init__(
        self, keys: Keys, secret: bytes | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys, self.secret, self.clock = keys, secret, clock

    def url(self, record: JobRecord, name: str) -> str:
        path = f"/v1/jobs/{record.id}/files/{name}"
        expires = math.ceil((self.clock() + _LINK_TTL_S) / _LINK_ROUND_S) * _LINK_ROUND_S
        signature = self._signature(record.merchant, record.id, name, expires)
        return f"{path}?expires={expires}&signature={signature}" if signature else path

    def valid(self, record: JobRecord, name: str, expires: int, signature: str) -> bool:
        expected = self._signature(record.merchant, record.id, name, expires)
        if expected is None or expires < self.clock():
            return False
        return hmac.compare_digest(expected.encode(), signature.encode())

    def _signature(self, merchant: str, job_id: str, name: str, expires: int) -> str | None:
        if self.secret is None or self.keys.open or not self.keys.has(merchant):
            return None
        key = hmac.new(self.secret, f"link/{merchant}".encode(), hashlib.sha256).digest()
        message = f"{job_id}/{name}/{expires}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()


def link_secret(settings: Settings) -> bytes:
    """``api.link_secret``; else the secret in ``<data_dir>/link-secret``, made (random,
    mode 0600) by the first server that needs it and kept for every restart after."""
    if settings.api.link_secret is not None:
        return settings.api.link_secret.get_secret_value().encode()
    path = settings.data_dir / LINK_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{LINK_SECRET_FILE}.")  # 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            # A hard link publishes the whole file at once and never replaces a secret that
            # another server made meanwhile (then its secret is the one read below).
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ConfigError(
            "api.link_secret",
            f"{path} holds no secret (under 32 characters); delete it to have a new one made",
        )
    return secret.encode()
