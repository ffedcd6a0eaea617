"""The ad-job service's settings sections (broker, jobs, API) and :class:`Settings`, the whole
of a deployment's settings: the one typed object the entry points load and pass down.

Sources, strongest first: keyword overrides, ``CASTWORK_*`` environment variables (nested
with ``__``, e.g. ``CASTWORK_ASR__MODEL=base``), a TOML file (``--config``, ``CASTWORK_CONFIG``
or ``./castwork.toml``), then the defaults. Components never read the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from base.errors import ConfigError
from base.redact import mask_url
from base.settings import ENV_PREFIX, Seconds, Section, load
from media.settings import RenderSettings


class BrokerSettings(Section):
    # None: `castwork serve` reuses a Redis on 127.0.0.1:6379 if it keeps an append-only
    # file, else starts one of its own (with one, under <data_dir>/redis). A URL given here
    # is used as it is (a warning if that Redis does not persist).
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
            raise ValueError(f"{mask_url(v)!r} is not a redis:// or amqp:// URL")
        return v


class JobSettings(Section):
    """Dramatiq workers and job storage."""

    # Job folders (inputs, work files, outputs); default <data_dir>/jobs.
    dir: Path | None = None
    # Redis for job records; default: the broker when it is Redis, else the local Redis.
    store_url: str | None = None
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    min_backoff_ms: Annotated[int, Field(ge=10, le=3_600_000)] = 2_000
    max_backoff_ms: Annotated[int, Field(ge=10, le=3_600_000)] = 60_000
    # Per step (narrate, one render, finalize); ffmpeg has its own timeout below this.
    time_limit_s: Seconds = 900.0
    processes: Annotated[int, Field(ge=1, le=64)] = 1
    threads: Annotated[int, Field(ge=1, le=64)] = 2
    # Messages a worker process holds per thread, the one it runs included. 1: no render
    # waits in a busy worker while another worker (another machine) is idle; dramatiq's own
    # default is 2, which saves a round trip to the broker per message.
    prefetch_per_thread: Annotated[int, Field(ge=1, le=100)] = 1
    # A worker that stops heart-beating this long is dead: its messages go back to the queue.
    heartbeat_timeout_s: Annotated[float, Field(ge=1.0, le=3600.0)] = 30.0
    # Retention (workers.retention, a pass every reap_every_s in each worker process): done
    # jobs' files and records are kept keep_days, failed and cancelled ones keep_failed_days;
    # uploads go once the job's normalized inputs exist. Over max_merchant_mb, a merchant's
    # oldest finished jobs go first, and a new job that does not fit is refused (429).
    keep_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    keep_failed_days: Annotated[float, Field(gt=0, le=3650)] = 7.0
    max_merchant_mb: Annotated[int, Field(ge=1, le=100_000_000)] = 5_000
    reap_every_s: Seconds = 600.0


class StorageSettings(Section):
    """Where job files live. Empty ``url``: the local ``jobs.dir`` (one machine, or a shared
    mount). ``s3://bucket/prefix``: any S3-compatible store, shared by the API and workers on
    other machines; each process's ``jobs.dir`` is then only its scratch space."""

    url: str = ""
    # The store's address, e.g. http://127.0.0.1:8333 (SeaweedFS, MinIO, Garage); None: AWS.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    # None: boto3's own chain (AWS_ACCESS_KEY_ID..., ~/.aws, an instance role).
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    # Downloads: "stream" passes the file through the API (the store stays private);
    # "redirect" sends the merchant to a presigned URL of the store (which they must reach:
    # public_endpoint_url, when the API reaches the store by another address).
    downloads: Literal["stream", "redirect"] = "stream"
    public_endpoint_url: str | None = None
    presign_s: Annotated[int, Field(ge=60, le=7 * 24 * 3600)] = 900

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if v and not _S3_URL.fullmatch(v):
            raise ValueError(f"{v!r} is not s3://bucket or s3://bucket/prefix (or empty: local)")
        return v.rstrip("/")

    @field_validator("endpoint_url", "public_endpoint_url")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"{mask_url(v)!r} is not an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _check_keys(self) -> StorageSettings:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("access_key and secret_key go together (or neither: boto3's chain)")
        return self

    @property
    def bucket(self) -> str:
        return self.url[len("s3://") :].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        """Key prefix of the job folders, without slashes at either end ("" for none)."""
        parts = self.url[len("s3://") :].split("/", 1)
        return parts[1].strip("/") if len(parts) > 1 else ""


# A bucket name as S3 allows it, then an optional key prefix of plain path parts.
_S3_URL = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9._-]+)*/?")


class WebhookSettings(Section):
    """Signed webhooks when a job finishes (workers.webhooks)."""

    # Webhooks to loopback, private, link-local or other internal addresses: refused unless
    # this is on (a merchant must not make the server call into its own network).
    allow_private: bool = False
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    # Attempts in all; between them dramatiq's exponential backoff, min to max.
    max_attempts: Annotated[int, Field(ge=1, le=30)] = 8
    min_backoff_ms: Annotated[int, Field(ge=10, le=3_600_000)] = 1_000
    max_backoff_ms: Annotated[int, Field(ge=10, le=86_400_000)] = 600_000


class ApiSettings(Section):
    """The merchant HTTP API and its web page."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8000
    # merchant id -> API key. Empty: no keys, allowed only on a loopback address (one
    # merchant, "local").
    keys: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")], SecretStr] = {}
    # Operator keys: the dashboard, /v1/ops/* and /metrics. Merchant keys never open them.
    # Empty: those are open where the API is (loopback, no merchant keys) and closed otherwise.
    ops_keys: list[SecretStr] = []
    max_request_mb: Annotated[int, Field(ge=1, le=2000)] = 80
    # Jobs a merchant may have queued or running at once.
    max_active_jobs: Annotated[int, Field(ge=1, le=10_000)] = 20
    # Host names the API answers to when keys are in force: "*" (any), a name, or
    # "*.example.com" (its subdomains). Without keys only loopback names are answered
    # (localhost, 127.0.0.1, [::1]), whatever this says, so that no web page reaches the
    # keyless API through DNS rebinding. Behind a reverse proxy, pass the client's Host on.
    allowed_hosts: Annotated[
        list[Annotated[str, Field(pattern=r"^(\*|(\*\.)?[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])$")]],
        Field(min_length=1),
    ] = ["*"]
    # Signs the download links of job views. Default: a random secret made once and kept in
    # <data_dir>/link-secret (mode 0600). Set it when several API servers share the jobs, so
    # that a link made by one opens on all. Changing it ends the links already handed out.
    link_secret: SecretStr | None = None

    @field_validator("link_secret")
    @classmethod
    def _check_link_secret(cls, v: SecretStr | None) -> SecretStr | None:
        # A ValueError, not Field(min_length=): pydantic's own message would quote the secret.
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("at least 16 characters (a random string: it signs download links)")
        return v


class Settings(RenderSettings):
    """Everything Castwork can be told, in one typed object."""

    broker: BrokerSettings = BrokerSettings()
    jobs: JobSettings = JobSettings()
    api: ApiSettings = ApiSettings()
    storage: StorageSettings = StorageSettings()
    webhooks: WebhookSettings = WebhookSettings()

    @model_validator(mode="after")
    def _check_time_limits(self) -> Settings:
        # ffmpeg's timeout must fire first, failing the render with its own reason; past
        # jobs.time_limit_s dramatiq interrupts the whole stage instead. A ConfigError, not a
        # ValueError: pydantic would report it at no location ("settings"), this names both.
        if self.media.render_timeout_s >= self.jobs.time_limit_s:
            raise ConfigError(
                f"media.render_timeout_s [{ENV_PREFIX}MEDIA__RENDER_TIMEOUT_S]",
                f"{self.media.render_timeout_s:g} s must be below jobs.time_limit_s "
                f"({self.jobs.time_limit_s:g} s), the limit of the whole stage",
            )
        return self

    @property
    def jobs_dir(self) -> Path:
        return self.jobs.dir or self.data_dir / "jobs"


def load_settings(config_file: str | Path | None = None, **overrides: object) -> Settings:
    """Build the whole settings or raise :class:`ConfigError` naming the first bad setting."""
    return load(Settings, config_file, **overrides)
