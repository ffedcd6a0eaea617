"""A/B experiments: which arm (named model configuration) a session belongs to.

The split is a hash, not a coin: ``sha256(salt:value)`` mapped onto the arms' weights, where
``value`` is the session id or the API key id. So an assignment can be recomputed later from
the turn log alone, a key's sessions can be kept in one arm (``split_by = "key"``: a user
hears one voice throughout), and changing the salt starts a fresh experiment. Each arm's
settings are the server's settings with the arm's overrides applied; see
:func:`voice.runtime.assembly.load_runtimes` for the engines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from base.errors import ConfigError
from base.settings import with_overrides
from voice.settings import ArmSettings, VoiceSettings

NO_ARM = "-"  # the label of turns served outside any experiment


def bucket(value: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by ``salt`` and ``value``."""
    h = hashlib.sha256(f"{salt}:{value}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign(value: str, weights: Sequence[tuple[str, float]], salt: str) -> str:
    """The arm ``value`` falls in, arms taking shares of [0, 1) in proportion to weight."""
    if not weights:
        return NO_ARM
    total = sum(w for _, w in weights)
    point = bucket(value, salt) * total
    for name, w in weights:
        if point < w:
            return name
        point -= w
    return weights[-1][0]  # float rounding at the very top


@dataclass(frozen=True)
class ArmConfig:
    name: str
    weight: float
    settings: VoiceSettings


def arm_configs(settings: VoiceSettings) -> list[ArmConfig]:
    """Each arm with its full settings (one unnamed arm without an experiment). Raises
    :class:`ConfigError` naming the arm whose overrides do not validate."""
    arms: list[ArmSettings] = settings.experiment.arms
    if not arms:
        return [ArmConfig(NO_ARM, 1.0, settings)]
    out = []
    for arm in arms:
        try:
            out.append(ArmConfig(arm.name, arm.weight, with_overrides(settings, arm.overrides)))
        except ConfigError as exc:
            message = str(exc).removeprefix(f"setting {exc.setting}: ")
            raise ConfigError(f"experiment.arms[{arm.name}] {exc.setting}", message) from None
    return out
