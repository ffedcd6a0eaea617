"""Where the one font of the ad videos lives, and loading it at a size.

Every text layer is set in Noto Sans CJK KR: a single family that covers Latin, Hangul, kana
and the common Han ideographs, so a merchant's mixed Korean/English copy never falls back to
a second font with different metrics. Debian ships it as ``fonts-noto-cjk`` (``./setup.sh``
installs it); the Black weight comes only with ``fonts-noto-cjk-extra`` and falls back to
Bold when absent, so a template asking for "black" still renders.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

from PIL import ImageFont

from media.errors import MediaError

FontWeight = Literal["regular", "bold", "black"]

FAMILY = "Noto Sans CJK KR"

# The OpenType style name of each weight, as fontconfig and the font's name table spell it.
_STYLES: dict[FontWeight, str] = {"regular": "Regular", "bold": "Bold", "black": "Black"}

# Where distributions put the Noto CJK files when fontconfig cannot be asked (a slim image
# without fc-match, or a font dropped in by hand).
KNOWN_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/opentype/noto"),  # Debian, Ubuntu
    Path("/usr/share/fonts/noto-cjk"),  # Arch, Alpine
    Path("/usr/share/fonts/google-noto-cjk"),  # Fedora
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
)

# A .ttc holds one face per region (JP, KR, SC, TC, HK, then the mono ones); we look the KR
# one up by name instead of trusting a fixed index.
_MAX_FACES = 16

# Seconds; fc-match answers from its cache in milliseconds, but a broken cache rebuilds.
_FC_TIMEOUT_S = 10.0


def _is_wanted_face(path: Path, index: int, style: str) -> bool:
    """True when face ``index`` of ``path`` is Noto Sans CJK KR in ``style``."""
    try:
        family, face_style = ImageFont.truetype(str(path), 16, index=index).getname()
    except OSError:
        return False
    return family == FAMILY and face_style == style


def _from_fc_match(style: str) -> tuple[Path, int] | None:
    """Ask fontconfig; it also finds fonts a user installed outside the usual folders."""
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        return None
    try:
        out = subprocess.run(
            [fc_match, "-f", "%{file}\n%{index}\n", f"{FAMILY}:style={style}"],
            capture_output=True,
            text=True,
            timeout=_FC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split("\n")
    if out.returncode != 0 or len(parts) < 2 or not parts[1].strip().isdigit():
        return None
    # fc-match always answers with *some* font: only accept it if it is the one we asked for.
    path, index = Path(parts[0]), int(parts[1])
    return (path, index) if _is_wanted_face(path, index, style) else None


def _from_known_dirs(style: str, dirs: tuple[Path, ...]) -> tuple[Path, int] | None:
    """Look for the collection (all regions in one .ttc) or the KR-only OpenType file."""
    for folder in dirs:
        collection = folder / f"NotoSansCJK-{style}.ttc"
        if collection.is_file():
            for index in range(_MAX_FACES):
                if _is_wanted_face(collection, index, style):
                    return collection, index
        single = folder / f"NotoSansCJKkr-{style}.otf"
        if single.is_file() and _is_wanted_face(single, 0, style):
            return single, 0
    return None


def _find(style: str) -> tuple[Path, int] | None:
    return _from_fc_match(style) or _from_known_dirs(style, KNOWN_DIRS)


@cache
def font_path(weight: FontWeight = "bold") -> tuple[Path, int]:
    """The file and face index of Noto Sans CJK KR in ``weight``.

    Raises :class:`MediaError` when the font is not installed.
    """
    found = _find(_STYLES[weight])
    if found is None and weight == "black":
        # Black is in fonts-noto-cjk-extra only; Bold keeps the layout close.
        found = _find(_STYLES["bold"])
    if found is None:
        raise MediaError(
            f"font {FAMILY} {_STYLES[weight]} not found: install fonts-noto-cjk (./setup.sh)",
            weight=weight,
        )
    return found


@lru_cache(maxsize=256)
def load_font(weight: FontWeight, size: int, file: str | None = None) -> ImageFont.FreeTypeFont:
    """Noto Sans CJK KR in ``weight`` at ``size`` px, or the font ``file`` (a merchant's, see
    :mod:`media.brandkit.font`: it has one weight); cached, as layout tries many sizes."""
    if file is not None:
        return ImageFont.truetype(file, size)
    path, index = font_path(weight)
    return ImageFont.truetype(str(path), size, index=index)
