"""How settings are read: sources, validation, errors that name the setting as a user writes it.

One typed, frozen settings object is built once at start-up and passed down. Each package owns
its sections and extends the object below with them (``voice.settings.VoiceSettings``, then
``media.settings.RenderSettings``, then ``workers.settings.Settings``: the whole deployment's);
this module knows none of them.

Sources, strongest first: keyword overrides, ``CASTWORK_*`` environment variables (nested
with ``__``, e.g. ``CASTWORK_ASR__MODEL=base``), a TOML file (``--config``, ``CASTWORK_CONFIG``
or ``./castwork.toml``), then the defaults. Components never read the environment.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from base.errors import ConfigError

ENV_PREFIX = "CASTWORK_"
Seconds = Annotated[float, Field(gt=0, le=86_400)]


class Section(BaseModel):
    """One ``[section]`` of the settings."""

    # A misspelt key in TOML or env must fail, not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = False
    # Per-turn JSON lines; default <data_dir>/logs/turns.jsonl.
    turn_log: Path | None = None


class SettingsBase(BaseSettings):
    """What every Castwork process reads: where its data lives and how it logs."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path.home() / ".cache" / "castwork"
    log: LogSettings = LogSettings()

    @property
    def turn_log_path(self) -> Path:
        return self.log.turn_log or self.data_dir / "logs" / "turns.jsonl"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


S = TypeVar("S", bound=SettingsBase)
M = TypeVar("M", bound=BaseModel)


def config_path(config_file: str | Path | None) -> Path | None:
    """The TOML file to read: the one given, else ``CASTWORK_CONFIG``, else ./castwork.toml."""
    if config_file is not None:
        return Path(config_file)
    if env := os.environ.get(f"{ENV_PREFIX}CONFIG"):
        return Path(env)
    local = Path("castwork.toml")
    return local if local.is_file() else None


def load(cls: type[S], config_file: str | Path | None = None, **overrides: object) -> S:
    """Build ``cls`` from every source or raise :class:`ConfigError` naming the first bad
    setting."""
    path = config_path(config_file)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{ENV_PREFIX}CONFIG", f"no such config file: {path}")
        try:
            tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{ENV_PREFIX}CONFIG", f"{path} is not valid TOML: {exc}") from None

    # A subclass carries the file path: pydantic-settings reads toml_file from the class.
    loaded = type(cls.__name__, (cls,), {"model_config": {**cls.model_config, "toml_file": path}})
    try:
        settings: S = loaded(**overrides)
    except ValidationError as exc:
        raise config_error(exc) from None
    return settings


def with_overrides(settings: M, overrides: Mapping[str, object]) -> M:
    """A copy of ``settings`` with dotted settings replaced (``{"asr.model": "base"}``),
    validated like any other source; a bad name or value raises :class:`ConfigError`."""
    data = settings.model_dump()
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part) if isinstance(node, dict) else None
            if not isinstance(child, dict):
                raise ConfigError(dotted, "no such setting")
            node = child
        if leaf not in node:
            raise ConfigError(dotted, "no such setting")
        node[leaf] = value
    try:
        # model_validate, not the constructor: the environment and files were read already.
        return type(settings).model_validate(data)
    except ValidationError as exc:
        raise config_error(exc) from None


def config_error(exc: ValidationError) -> ConfigError:
    """Turn pydantic's report into one line that names the setting as a user writes it."""
    err = exc.errors()[0]
    dotted, env_parts = "", []
    for part in err["loc"]:
        if isinstance(part, int):
            dotted += f"[{part}]"
        elif "[" not in part:  # pydantic's internal tags, e.g. function-after[...]
            dotted += f".{part}" if dotted else part
            if not any("[" in p for p in dotted.split(".")[:-1]) and "[" not in dotted:
                env_parts.append(part.upper())
    dotted = dotted or "settings"
    env = ENV_PREFIX + "__".join(env_parts)
    if err["type"] == "extra_forbidden":
        message = "unknown setting (misspelt?)"
    else:
        message = str(err["msg"]).removeprefix("Value error, ")
        if err.get("input") is not None and err["type"] != "value_error":
            message += f" (got {err['input']!r})"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return ConfigError(f"{dotted} [{env}]", message + more)
