"""A merchant's font: one TTF or OTF file, checked before any text is set in it.

fontTools parses the tables a renderer relies on (a broken or hostile file fails here, with
the reason, not in the middle of a render), and FreeType, which draws the text, must open it
and draw a letter. What it covers is read from its character map: ``en`` when it has the
basic Latin letters and digits, ``ko`` when it has the 2,350 Hangul syllables of KS X 1001
(what Korean fonts cover at the least). A job's texts are set in it only when it has a glyph
for every character they draw (:func:`choose_font`); else the whole job keeps the house font,
so an ad never mixes two families or shows a missing-glyph box, and the job says why.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fontTools.ttLib import TTFont, TTLibError
from PIL import Image, ImageDraw, ImageFont

from media.errors import InputError
from media.templates import Language

# sfnt versions of single-font files: TrueType outlines (twice) and CFF outlines. Collections
# (ttcf), WOFF and WOFF2 are refused: one face per file keeps "which font" unambiguous.
_SFNT = {b"\x00\x01\x00\x00": "TrueType", b"true": "TrueType", b"OTTO": "OpenType (CFF)"}
_REQUIRED_TABLES = ("cmap", "head", "hhea", "hmtx", "maxp", "name")
_OUTLINES = ("glyf", "CFF ", "CFF2")

_LATIN = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _ks_x_1001_hangul() -> str:
    # The syllables EUC-KR encodes are exactly KS X 1001's 2,350.
    out = []
    for code in range(0xAC00, 0xD7A4):
        try:
            chr(code).encode("euc_kr")
        except UnicodeEncodeError:
            continue
        out.append(chr(code))
    return "".join(out)


COVERAGE: dict[Language, str] = {"en": _LATIN, "ko": _ks_x_1001_hangul()}


def sniff_font(head: bytes) -> bool:
    """Whether the bytes start like one TrueType or OpenType font."""
    return head[:4] in _SFNT


@dataclass(frozen=True)
class FontInfo:
    family: str
    style: str
    format: str  # TrueType or OpenType (CFF)
    glyphs: int
    languages: tuple[Language, ...]  # whose letters it covers


def _fail(name: str, problem: str, reason: str) -> InputError:
    return InputError(f"{name}: {problem}", upload=name, reason=reason, field="font")


def inspect_font(data: bytes, name: str, *, max_bytes: int) -> FontInfo:
    """What ``data`` is as a font; :class:`InputError` (with a reason) when it is not usable."""
    if len(data) > max_bytes:
        raise _fail(name, f"larger than the {max_bytes >> 20} MB limit", "too_large")
    kind = _SFNT.get(data[:4])
    if kind is None:
        raise _fail(
            name,
            "not a TrueType or OpenType font (collections, WOFF and other files are not "
            "accepted); send one .ttf or .otf",
            "not_a_font",
        )
    try:
        font = TTFont(io.BytesIO(data), fontNumber=0)
        missing = [t for t in _REQUIRED_TABLES if t not in font]
        if missing or not any(t in font for t in _OUTLINES):
            raise _fail(name, f"a font without {', '.join(missing) or 'outlines'}", "broken")
        for tag in (*_REQUIRED_TABLES, *(t for t in _OUTLINES if t in font)):
            font[tag]  # decompiles the table: truncated or garbled ones raise here
        cmap = font.getBestCmap() or {}
        family = font["name"].getBestFamilyName() or name
        style = font["name"].getBestSubFamilyName() or "Regular"
        glyphs = font["maxp"].numGlyphs
    except InputError:
        raise
    except (TTLibError, Exception) as exc:  # fontTools raises many kinds on a broken file
        raise _fail(name, f"a broken font file ({type(exc).__name__})", "broken") from None
    if not cmap:
        raise _fail(name, "has no Unicode character map", "no_characters")
    _check_drawable(data, name)
    languages = tuple(
        lang for lang, letters in COVERAGE.items() if all(ord(c) in cmap for c in letters)
    )
    if not languages:
        raise _fail(
            name,
            "covers neither the Latin letters and digits nor the common Hangul syllables",
            "no_coverage",
        )
    return FontInfo(family, style, kind, glyphs, languages)


def _check_drawable(data: bytes, name: str) -> None:
    """FreeType, which sets the ad's text, opens the font and draws ink with it."""
    try:
        face = ImageFont.truetype(io.BytesIO(data), 48)
        image = Image.new("L", (200, 100))
        ImageDraw.Draw(image).text((10, 10), "Ag", font=face, fill=255)
    except (OSError, ValueError) as exc:
        raise _fail(name, f"the text renderer cannot use it ({exc})", "broken") from None
    if image.getbbox() is None:
        raise _fail(name, "draws nothing for ordinary letters", "no_ink")


@lru_cache(maxsize=32)
def _characters(path: str) -> frozenset[int]:
    font = TTFont(path, lazy=True, fontNumber=0)
    try:
        return frozenset((font.getBestCmap() or {}).keys())
    finally:
        font.close()


def missing_characters(path: Path, texts: Iterable[str]) -> str:
    """The characters of ``texts`` the font at ``path`` has no glyph for (in order, once each;
    spaces and characters the renderer drops anyway are not asked for)."""
    have = _characters(str(path))
    seen: dict[str, None] = {}
    for text in texts:
        for ch in text + text.upper():
            if ch.isspace() or ord(ch) in have or ch in seen:
                continue
            seen[ch] = None
    return "".join(seen)


@dataclass(frozen=True)
class FontChoice:
    path: Path | None  # the merchant's font, or None: the house font
    note: str | None  # why the merchant's font was not used


def choose_font(
    path: Path | None, texts: Iterable[str], *, house_draws: Callable[[str], bool]
) -> FontChoice:
    """The merchant's font if it has a glyph for every character of ``texts`` that the house
    font draws (the others, emoji say, the text renderer drops in any font), else None."""
    if path is None:
        return FontChoice(None, None)
    lacking = [ch for ch in missing_characters(path, texts) if house_draws(ch)]
    if not lacking:
        return FontChoice(path, None)
    shown = "".join(lacking[:12]) + ("…" if len(lacking) > 12 else "")
    return FontChoice(
        None, f"the brand font has no glyph for {shown!r}: set in the house font instead"
    )
