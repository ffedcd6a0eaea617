"""Text layers of the ad videos: one text fitted into a box, rendered to a tight RGBA PNG.

The renderer overlays these PNGs on the video instead of using ffmpeg's ``drawtext``: drawtext
needs the filter-syntax characters of a merchant's copy (``' " : % \\ [ ] ; ,``) escaped,
and it neither wraps nor shrinks. Here Pillow sets the text with the real metrics of Noto Sans
CJK KR (:mod:`media.fonts`):

* lines break at spaces for Latin and Korean, between any two characters for Chinese and
  Japanese, and inside a word only when the word alone is wider than the box; closing
  punctuation never starts a line and opening punctuation never ends one;
* the size shrinks in ~5 % steps from ``max_size`` until the block fits the box; at
  ``min_size`` the last line that fits is cut with "…" instead;
* characters the font has no glyph for (emoji...) are dropped, so no tofu box ever shows.

Output files are named by a hash of every input, written atomically and reused, so re-rendering
a job is cheap and byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import islice, pairwise
from pathlib import Path
from typing import Literal

import PIL
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, features

from base.files import atomic_open
from media.errors import InputError
from media.fonts import FontWeight, font_path, load_font

# Bump when the pixels for the same inputs change, so cached PNGs are not reused.
_RENDER_VERSION = 1

ELLIPSIS = "…"

# Each shrink step; 5 % is below what the eye tells apart between two layers.
_SIZE_STEP = 0.95

# Glyph/notdef comparison size: big enough that distinct glyphs never rasterize alike.
_PROBE_SIZE = 32
# The last private-use code point: no font maps it, so it renders as the .notdef box.
_NOTDEF_PROBE = "\U0010fffd"

# A capital, a descender and a Hangul syllable: the usual vertical extent of a line. Every line
# is at least this tall, so layers with and without descenders share their baseline position.
_REFERENCE = "Hg한"

# Soft shadow, relative to the font size: offset, blur sigma, and its opacity.
_SHADOW_OFFSET = 0.03
_SHADOW_BLUR = 0.04
_SHADOW_OPACITY = 0.55

# Rounded corners are drawn this many times larger and scaled down: Pillow does not antialias.
_SUPERSAMPLE = 4

_RAQM = bool(features.check("raqm"))

_COLOR = re.compile(r"#([0-9A-Fa-f]{6})([0-9A-Fa-f]{2})?")
_NEWLINES = re.compile(r"\r\n|[\r\u2028\u2029\x85]")
_SPACES = re.compile(r" +")
_AROUND_NEWLINE = re.compile(r" *\n[ \n]*")

# Control, format, surrogate, private-use and unassigned code points never render as text.
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})

# Not at a line start (on top of the Pe/Pf categories): Western and CJK closing marks, the
# small kana and the prolonged sound mark (Japanese line-breaking rules, JIS X 4051).
_CLOSING = frozenset(
    ",.!?:;%…‥、。，．！？：；ーゝゞヽヾ々ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ"
)
# Trimmed before an ellipsis: "Sale, …" reads worse than "Sale…".
_TRIM_BEFORE_ELLIPSIS = " ,.;:·、。，"


@dataclass(frozen=True)
class TextStyle:
    """How one text layer looks; templates fill it from their ``TextLook``."""

    weight: FontWeight = "bold"
    color: str = "#FFFFFF"  # "#RRGGBB" or "#RRGGBBAA"
    max_size: int = 96  # px, the size tried first
    min_size: int = 28  # px; below this the text is truncated with an ellipsis instead
    max_lines: int = 3
    align: Literal["left", "center", "right"] = "center"
    valign: Literal["top", "middle", "bottom"] = "middle"
    line_spacing: float = 1.15  # times the font's ascent + descent
    stroke: int = 0  # outline width in px at max_size (scaled with the size)
    stroke_color: str = "#000000"
    shadow: bool = False  # soft drop shadow for legibility on photos
    background: str | None = None  # a pill/box behind the text, e.g. "#E63946" or "#000000AA"
    padding: int = 0  # px around the text inside the background
    radius: int = 0  # corner radius of the background
    uppercase: bool = False
    highlight: str = "#FFD60A"  # the emphasised word's colour (karaoke captions)
    font: str | None = None  # a merchant's font file (media.brandkit.font); None: Noto


@dataclass(frozen=True)
class RenderedText:
    """A rendered layer and where to overlay it: at (box left + x, box top + y)."""

    path: Path  # PNG, RGBA, tight around the text (+ padding/background/shadow)
    width: int
    height: int
    x: int  # offset of the image's top-left inside the box, from align/valign
    y: int
    size: int  # font size used
    lines: tuple[str, ...]
    truncated: bool


Fits = Callable[[str], bool]
# left, top, right, bottom in px
Box = tuple[int, int, int, int]
# An unbreakable piece of text and whether a space separates it from the piece before.
Atom = tuple[str, bool]


@dataclass(frozen=True)
class _Layout:
    """Where everything goes in the image; computed once, used to fit and to draw."""

    size: int
    lines: tuple[str, ...]
    truncated: bool
    stroke: int  # px at this size
    origins: tuple[tuple[int, int], ...]  # left-baseline ("ls") anchor of each line
    content: Box  # text + padding (the background), left/top/right/bottom
    width: int
    height: int
    shadow_offset: int
    shadow_blur: int


# --- Cleaning ------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """NFC; one space between words and at most one newline; no controls; only drawable chars."""
    text = _NEWLINES.sub("\n", unicodedata.normalize("NFC", text))
    kept = "".join(_clean_char(ch) for ch in text)
    kept = _AROUND_NEWLINE.sub("\n", _SPACES.sub(" ", kept))
    return kept.strip(" \n")


def _clean_char(ch: str) -> str:
    if ch == "\n":
        return ch
    if ch.isspace():
        return " "  # tabs, no-break and ideographic spaces all become a plain space
    if unicodedata.category(ch) in _DROPPED_CATEGORIES or not has_glyph(ch):
        return ""
    return ch


@lru_cache(maxsize=8192)
def has_glyph(ch: str) -> bool:
    """True when the font draws ``ch`` as something other than its .notdef box.

    Pillow exposes no cmap, and fontTools is not a dependency: a missing character renders as
    the .notdef glyph, so compare its box, advance and pixels with those of .notdef.
    """
    return _signature(ch) != _signature(_NOTDEF_PROBE)


@lru_cache(maxsize=8192)
def _signature(ch: str) -> tuple[tuple[float, ...], float, bytes]:
    # Regular and Bold of Noto Sans CJK cover the same characters; Bold is the one always used.
    font = load_font("bold", _PROBE_SIZE)
    box = font.getbbox(ch)
    width, height = math.ceil(box[2]) + 1, math.ceil(box[3]) + 1
    image = Image.new("L", (max(1, width), max(1, height)))
    ImageDraw.Draw(image).text((0, 0), ch, font=font, fill=255)
    return tuple(box), font.getlength(ch), image.tobytes()


# --- Line breaking ---------------------------------------------------------------------------


def _is_hangul(ch: str) -> bool:
    cp = ord(ch)
    return (
        0xAC00 <= cp <= 0xD7AF  # syllables
        or 0x1100 <= cp <= 0x11FF  # jamo
        or 0x3130 <= cp <= 0x318F  # compatibility jamo
        or 0xA960 <= cp <= 0xA97F
        or 0xD7B0 <= cp <= 0xD7FF
    )


def _breaks_anywhere(ch: str) -> bool:
    """Han, kana and fullwidth forms: written without spaces, so any gap is a break."""
    return unicodedata.east_asian_width(ch) in ("W", "F") and not _is_hangul(ch)


def _is_closing(ch: str) -> bool:
    return ch in _CLOSING or unicodedata.category(ch) in ("Pe", "Pf")


def _is_opening(ch: str) -> bool:
    return unicodedata.category(ch) in ("Ps", "Pi")


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("M")


def _glued(prev: str, ch: str) -> bool:
    """Whether no line may break between ``prev`` and ``ch`` whatever the script."""
    return _is_closing(ch) or _is_opening(prev) or _is_mark(ch)


def _atoms(paragraph: str) -> list[Atom]:
    """Unbreakable pieces of a paragraph, each with whether a space precedes it."""
    atoms: list[Atom] = []
    for word in paragraph.split(" "):
        if not word:
            continue
        if atoms and all(_is_closing(c) for c in word):
            # "Sale !": a lone closing mark stays with the word before it.
            text, spaced = atoms[-1]
            atoms[-1] = (f"{text} {word}", spaced)
            continue
        pieces = [word[0]]
        for prev, ch in pairwise(word):
            if not _glued(prev, ch) and (_breaks_anywhere(prev) or _breaks_anywhere(ch)):
                pieces.append(ch)
            else:
                pieces[-1] += ch
        atoms.extend((piece, i == 0) for i, piece in enumerate(pieces))
    return atoms


def _char_units(token: str) -> list[str]:
    """The pieces a too-long token may be cut into: characters, keeping the glued ones."""
    units = [token[0]]
    for prev, ch in pairwise(token):
        if _glued(prev, ch):
            units[-1] += ch
        else:
            units.append(ch)
    return units


def _break_chars(token: str, fits: Fits) -> list[str]:
    """A token wider than a whole line (a URL, a long name), cut greedily between characters."""
    pieces = [""]
    for unit in _char_units(token):
        if pieces[-1] and not fits(pieces[-1] + unit):
            pieces.append(unit)
        else:
            pieces[-1] += unit
    return [piece.strip() for piece in pieces if piece.strip()]


def _wrap_paragraph(atoms: list[Atom], fits: Fits) -> Iterator[str]:
    """Greedy fill: each atom goes on the current line if the line still fits."""
    line = ""
    for atom, spaced in atoms:
        joined = f"{line} {atom}" if line and spaced else line + atom
        if fits(joined):
            line = joined
            continue
        if line:
            yield line
        if fits(atom):
            line = atom
            continue
        *full, line = _break_chars(atom, fits)
        yield from full
    if line:
        yield line


def _wrap(paragraphs: list[list[Atom]], fits: Fits) -> Iterator[str]:
    """Lines of the paragraphs, lazily: callers stop once they have more than they can use."""
    for atoms in paragraphs:
        yield from _wrap_paragraph(atoms, fits)


def _ellipsize(line: str, fits: Fits) -> str | None:
    """``line`` cut so that it and "…" fit; None when not even "…" does."""
    units = _char_units(line)
    while units:
        head = "".join(units).rstrip(_TRIM_BEFORE_ELLIPSIS)
        if head and fits(head + ELLIPSIS):
            return head + ELLIPSIS
        units.pop()
    return ELLIPSIS if fits(ELLIPSIS) else None


# --- Geometry ------------------------------------------------------------------------------


def _ink(font: ImageFont.FreeTypeFont, text: str, stroke: int) -> Box:
    """Box of ``text`` relative to its left baseline origin, outline included; from metrics.

    Vertically it is the ink; horizontally it spans the pen's travel too, so it is a little
    wider than the ink (side bearings) but never narrower: safe for fitting, and fast.
    """
    left, top, right, bottom = font.getbbox(text, anchor="ls", stroke_width=stroke)
    return math.floor(left), math.floor(top), math.ceil(right), math.ceil(bottom)


def _face(style: TextStyle, size: int) -> ImageFont.FreeTypeFont:
    return load_font(style.weight, size, style.font)


@lru_cache(maxsize=1024)
def _exact_ink(weight: FontWeight, file: str | None, size: int, text: str, stroke: int) -> Box:
    """The ink box of ``text`` as drawn, pixel-exact: for the final, tight layout only."""
    font = load_font(weight, size, file)
    left, top, right, bottom = _ink(font, text, stroke)
    mask = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(mask).text(
        (-left, -top), text, font=font, fill=255, anchor="ls", stroke_width=stroke
    )
    ink = mask.getbbox()
    if ink is None:  # only invisible characters: keep the metric box
        return left, top, right, bottom
    return left + ink[0], top + ink[1], left + ink[2], top + ink[3]


def _stroke_px(style: TextStyle, size: int) -> int:
    if style.stroke <= 0:
        return 0
    return max(1, round(style.stroke * size / style.max_size))


def _shadow_px(style: TextStyle, size: int) -> tuple[int, int, int]:
    """(offset, blur sigma, reach beyond the ink) of the shadow at ``size``; zeros if none."""
    if not style.shadow:
        return 0, 0, 0
    blur = max(1, round(size * _SHADOW_BLUR))
    return max(1, round(size * _SHADOW_OFFSET)), blur, 3 * blur


def _margins(style: TextStyle, size: int) -> tuple[int, int]:
    """Space the shadow needs (before, after) the content on each axis: it falls down-right."""
    offset, _, reach = _shadow_px(style, size)
    return max(0, reach - offset), reach + offset


def _available_width(style: TextStyle, size: int, box_w: int) -> int:
    before, after = _margins(style, size)
    return box_w - 2 * style.padding - before - after


def _measure(
    lines: list[str], size: int, style: TextStyle, truncated: bool, exact: bool = False
) -> _Layout:
    """Place ``lines``; ``exact`` trims the side bearings, which only ever makes it smaller."""
    font = _face(style, size)
    stroke = _stroke_px(style, size)
    ascent, descent = font.getmetrics()
    # Lines are spaced by the font's ascent + descent, not by their own ink, so a Latin line
    # and a Hangul line sit at the same pitch.
    pitch = max(1, round((ascent + descent) * style.line_spacing))
    if exact:
        inks = [_exact_ink(style.weight, style.font, size, line, stroke) for line in lines]
    else:
        inks = [_ink(font, line, stroke) for line in lines]
    _, ref_top, _, ref_bottom = _ink(font, _REFERENCE, stroke)
    top = min(ref_top, *(ink[1] + i * pitch for i, ink in enumerate(inks)))
    bottom = max(
        (len(lines) - 1) * pitch + ref_bottom, *(ink[3] + i * pitch for i, ink in enumerate(inks))
    )
    text_w = max(ink[2] - ink[0] for ink in inks)
    before, after = _margins(style, size)
    pad = style.padding
    content = (before, before, before + text_w + 2 * pad, before + bottom - top + 2 * pad)
    origins = tuple(
        (
            content[0] + pad + _align_offset(style.align, text_w - (ink[2] - ink[0])) - ink[0],
            content[1] + pad - top + i * pitch,
        )
        for i, ink in enumerate(inks)
    )
    offset, blur, _ = _shadow_px(style, size)
    return _Layout(
        size=size,
        lines=tuple(lines),
        truncated=truncated,
        stroke=stroke,
        origins=origins,
        content=content,
        width=content[2] + after,
        height=content[3] + after,
        shadow_offset=offset,
        shadow_blur=blur,
    )


def _align_offset(align: str, slack: int) -> int:
    """Where a block ``slack`` px narrower (or lower) than its room starts in it."""
    if align in ("left", "top"):
        return 0
    if align in ("right", "bottom"):
        return slack
    return slack // 2


# --- Fitting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """One text to fit, split into atoms once for all the sizes tried."""

    flat: str  # the text on one line, for a quick width
    paragraphs: list[list[Atom]]
    box_w: int
    box_h: int
    style: TextStyle


def _sizes(start: int, stop: int) -> Iterator[int]:
    """``start`` down to ``stop`` (both included) in ~5 % steps, at least 1 px each."""
    size = start
    while size > stop:
        yield size
        size = max(stop, min(size - 1, math.floor(size * _SIZE_STEP)))
    yield stop


def _fitter(job: _Job, size: int) -> Fits:
    font = _face(job.style, size)
    stroke = _stroke_px(job.style, size)
    room = _available_width(job.style, size, job.box_w)

    def fits(line: str) -> bool:
        left, _, right, _ = _ink(font, line, stroke)
        return right - left <= room

    return fits


def _surely_too_long(job: _Job, size: int) -> bool:
    """A cheap necessary condition, so long texts skip the sizes they cannot fit at.

    The lines hold all the text but the spaces dropped at breaks; the slack per line covers
    that space and the side bearings by which a line's ink is narrower than its advance.
    """
    if len(job.paragraphs) > job.style.max_lines:
        return True  # explicit line breaks alone need more lines; no size helps
    room = _available_width(job.style, size, job.box_w) + 0.75 * size
    return _face(job.style, size).getlength(job.flat) > job.style.max_lines * room


def _inside(layout: _Layout, job: _Job) -> bool:
    return layout.width <= job.box_w and layout.height <= job.box_h


def _fit_whole(job: _Job, size: int) -> _Layout | None:
    """All of the text at ``size``, or None if it needs more lines or room than there is."""
    if _surely_too_long(job, size):
        return None
    lines = list(islice(_wrap(job.paragraphs, _fitter(job, size)), job.style.max_lines + 1))
    if len(lines) > job.style.max_lines:
        return None
    layout = _measure(lines, size, job.style, truncated=False)
    return layout if _inside(layout, job) else None


def _fit_truncated(job: _Job, size: int) -> _Layout | None:
    """As many lines as fit at ``size``, the last one cut with "…"; None if not even one."""
    fits = _fitter(job, size)
    lines = list(islice(_wrap(job.paragraphs, fits), job.style.max_lines + 1))
    for count in range(min(job.style.max_lines, len(lines)), 0, -1):
        kept = lines[:count]
        if count < len(lines):
            last = _ellipsize(kept[-1], fits)
            if last is None:
                continue
            kept[-1] = last
        layout = _measure(kept, size, job.style, truncated=count < len(lines))
        if _inside(layout, job):
            return layout
    return None


def _empty_layout(style: TextStyle) -> _Layout:
    """Nothing drawable is left (only emoji, say): a 1x1 transparent image overlays as nothing."""
    return _Layout(style.max_size, (), False, 0, (), (0, 0, 1, 1), 1, 1, 0, 0)


def _plan(text: str, box_w: int, box_h: int, style: TextStyle) -> _Layout:
    """The largest size (and lines) at which the cleaned text fits; fitted with metric boxes."""
    _validate(box_w, box_h, style)
    text = clean_text(text)
    if style.uppercase:
        text = text.upper()
    if not text:
        return _empty_layout(style)
    paragraphs = [_atoms(p) for p in text.split("\n")]
    job = _Job(text.replace("\n", " "), paragraphs, box_w, box_h, style)
    for size in _sizes(style.max_size, style.min_size):
        layout = _fit_whole(job, size)
        if layout is not None:
            return layout
    # Below min_size only when the box cannot even hold one truncated line at min_size.
    for size in _sizes(style.min_size, 1):
        layout = _fit_truncated(job, size)
        if layout is not None:
            return layout
    raise InputError(
        f"text box {box_w}x{box_h} px is too small for any text with padding {style.padding}"
    )


def _tighten(layout: _Layout, style: TextStyle) -> _Layout:
    """The same layout around the exact ink: a few px narrower, so it still fits the box."""
    if not layout.lines:
        return layout
    return _measure(list(layout.lines), layout.size, style, layout.truncated, exact=True)


def _validate(box_w: int, box_h: int, style: TextStyle) -> None:
    if box_w < 1 or box_h < 1:
        raise InputError(f"text box must be at least 1x1 px, not {box_w}x{box_h}")
    if not 1 <= style.min_size <= style.max_size:
        raise InputError(f"need 1 <= min_size <= max_size, not {style.min_size}, {style.max_size}")
    if style.max_lines < 1 or style.line_spacing <= 0:
        raise InputError("max_lines must be >= 1 and line_spacing > 0")
    if min(style.stroke, style.padding, style.radius) < 0:
        raise InputError("stroke, padding and radius must not be negative")
    for color in (style.color, style.stroke_color, style.background):
        if color is not None:
            _rgba(color)


def _rgba(color: str) -> tuple[int, int, int, int]:
    match = _COLOR.fullmatch(color)
    if match is None:
        raise InputError(f"colour must be #RRGGBB or #RRGGBBAA, not {color!r}")
    rgb, alpha = match.group(1), match.group(2) or "FF"
    return int(rgb[0:2], 16), int(rgb[2:4], 16), int(rgb[4:6], 16), int(alpha, 16)


# --- Drawing ---------------------------------------------------------------------------------


def _scaled(mask: Image.Image, alpha: int) -> Image.Image:
    """``mask`` times ``alpha``/255: a translucent colour covers proportionally less."""
    if alpha == 255:
        return mask
    return mask.point([v * alpha // 255 for v in range(256)])


def _paint(canvas: Image.Image | None, color: str, mask: Image.Image) -> Image.Image:
    """``color`` through ``mask``, composited over ``canvas`` unless nothing is drawn yet."""
    red, green, blue, alpha = _rgba(color)
    layer = Image.new("RGBA", mask.size, (red, green, blue, 0))
    layer.putalpha(_scaled(mask, alpha))
    return layer if canvas is None else Image.alpha_composite(canvas, layer)


def _text_mask(layout: _Layout, font: ImageFont.FreeTypeFont, stroke: int) -> Image.Image:
    mask = Image.new("L", (layout.width, layout.height), 0)
    draw = ImageDraw.Draw(mask)
    for origin, line in zip(layout.origins, layout.lines, strict=True):
        draw.text(
            origin, line, font=font, fill=255, anchor="ls", stroke_width=stroke, stroke_fill=255
        )
    return mask


@lru_cache(maxsize=64)
def _corner(radius: int) -> Image.Image:
    """The top-left quarter of an antialiased disc, drawn large and scaled down."""
    big = radius * _SUPERSAMPLE
    tile = Image.new("L", (big, big), 0)
    ImageDraw.Draw(tile).ellipse((0, 0, 2 * big - 1, 2 * big - 1), fill=255)
    return tile.resize((radius, radius), Image.Resampling.BOX)


def _background_mask(layout: _Layout, radius: int) -> Image.Image:
    """The content box with rounded corners; only the corners are supersampled (cheap)."""
    left, top, right, bottom = layout.content
    mask = Image.new("L", (layout.width, layout.height), 0)
    ImageDraw.Draw(mask).rectangle((left, top, right - 1, bottom - 1), fill=255)
    radius = min(radius, (right - left) // 2, (bottom - top) // 2)
    if radius > 0:
        corner = _corner(radius)
        flip_x, flip_y = Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM
        mask.paste(corner, (left, top))
        mask.paste(corner.transpose(flip_x), (right - radius, top))
        mask.paste(corner.transpose(flip_y), (left, bottom - radius))
        mask.paste(corner.transpose(Image.Transpose.ROTATE_180), (right - radius, bottom - radius))
    return mask


def _with_shadow(image: Image.Image, layout: _Layout) -> Image.Image:
    """A blurred, offset, translucent black copy of everything drawn, underneath it."""
    width, height = image.size
    offset = layout.shadow_offset
    shifted = Image.new("L", image.size, 0)
    shifted.paste(
        image.getchannel("A").crop((0, 0, width - offset, height - offset)), (offset, offset)
    )
    blurred = shifted.filter(ImageFilter.GaussianBlur(layout.shadow_blur))
    shadow = _paint(None, "#000000", _scaled(blurred, round(255 * _SHADOW_OPACITY)))
    return Image.alpha_composite(shadow, image)


def _draw(layout: _Layout, style: TextStyle, emphasis: tuple[str, int, int] | None) -> Image.Image:
    if not layout.lines:
        return Image.new("RGBA", (layout.width, layout.height), (0, 0, 0, 0))
    font = _face(style, layout.size)
    image: Image.Image | None = None
    if style.background is not None:
        image = _paint(image, style.background, _background_mask(layout, style.radius))
    if layout.stroke:
        image = _paint(image, style.stroke_color, _text_mask(layout, font, layout.stroke))
    fill = _text_mask(layout, font, 0)
    image = _paint(image, style.color, fill)
    if emphasis is not None:
        region = _span_mask(layout, font, *emphasis)
        image = _paint(image, style.highlight, ImageChops.multiply(fill, region))
    if style.shadow:
        image = _with_shadow(image, layout)
    return image


# --- Emphasis (karaoke) ----------------------------------------------------------------------


def _emphasis(text: str, index: int, style: TextStyle) -> tuple[str, int, int] | None:
    """Word ``index`` of ``text.split()`` as a character span of the text as laid out (cleaned,
    upper-cased if the style says so, newlines as spaces): (that text, start, end). None when
    the word has nothing drawable (an emoji alone, say)."""
    words = text.split()
    if not 0 <= index < len(words) or not clean_text(words[index]):
        return None
    # Words that clean to nothing vanish from the laid-out text: count only the others.
    target = sum(1 for w in words[:index] if clean_text(w))
    flat = clean_text(text)
    if style.uppercase:
        flat = flat.upper()
    flat = flat.replace("\n", " ")
    for i, match in enumerate(re.finditer(r"\S+", flat)):
        if i == target:
            return flat, match.start(), match.end()
    return None


def _span_mask(
    layout: _Layout, font: ImageFont.FreeTypeFont, flat: str, a: int, b: int
) -> Image.Image:
    """Where characters [a, b) of ``flat`` were drawn: a rectangle per line they fall on.

    Lines are consecutive pieces of ``flat``: a break drops the space it replaced, and a
    truncated last line ends in an ellipsis after a prefix of its piece."""
    mask = Image.new("L", (layout.width, layout.height), 0)
    draw = ImageDraw.Draw(mask)
    ascent, descent = font.getmetrics()
    pos = 0
    for (x, baseline), line in zip(layout.origins, layout.lines, strict=True):
        while pos < len(flat) and flat[pos] == " ":
            pos += 1
        body = line.removesuffix(ELLIPSIS) if not flat.startswith(line, pos) else line
        if not flat.startswith(body, pos):
            break  # not a piece of the text (cannot happen; drawn plain rather than wrong)
        lo, hi = max(a, pos) - pos, min(b, pos + len(body)) - pos
        if lo < hi:
            left = x + font.getlength(line[:lo]) - layout.stroke
            right = x + font.getlength(line[:hi]) + layout.stroke
            top, bottom = baseline - ascent - layout.stroke, baseline + descent + layout.stroke
            draw.rectangle((math.floor(left), top, math.ceil(right), bottom), fill=255)
        pos += len(body)
    return mask


# --- Public API ------------------------------------------------------------------------------


def layout_text(text: str, box_w: int, box_h: int, style: TextStyle) -> tuple[int, list[str], bool]:
    """(font size, lines, truncated) for ``text`` in a ``box_w`` x ``box_h`` box; no file I/O."""
    layout = _plan(text, box_w, box_h, style)
    return layout.size, list(layout.lines), layout.truncated


def render_text(
    text: str,
    box_w: int,
    box_h: int,
    style: TextStyle,
    out_dir: Path,
    *,
    emphasis: int | None = None,
) -> RenderedText:
    """Render ``text`` into ``out_dir/<hash of the inputs>.png``, reusing an existing file.

    ``emphasis``: the index of a word of ``text.split()`` drawn in ``style.highlight``. The
    layout never depends on it, so every emphasis of one text lands on the same pixels."""
    layout = _tighten(_plan(text, box_w, box_h, style), style)
    path = out_dir / _file_name(text, box_w, box_h, style, emphasis)
    if not path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        span = _emphasis(text, emphasis, style) if emphasis is not None else None
        _write_png(_draw(layout, style, span), path)
    return RenderedText(
        path=path,
        width=layout.width,
        height=layout.height,
        x=_align_offset(style.align, box_w - layout.width),
        y=_align_offset(style.valign, box_h - layout.height),
        size=layout.size,
        lines=layout.lines,
        truncated=layout.truncated,
    )


def _file_name(
    text: str, box_w: int, box_h: int, style: TextStyle, emphasis: int | None = None
) -> str:
    """A hash of everything that decides the pixels: inputs, font file, Pillow and its layout."""
    font_file, index = (style.font, 0) if style.font else font_path(style.weight)
    key = {
        "version": _RENDER_VERSION,
        "pillow": PIL.__version__,
        "raqm": _RAQM,
        "font": [str(font_file), index],
        "text": text,
        "box": [box_w, box_h],
        "style": asdict(style),
        "emphasis": emphasis,
    }
    payload = json.dumps(key, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:32] + ".png"


def _write_png(image: Image.Image, path: Path) -> None:
    """Readers never see half a PNG (:mod:`base.files`)."""
    with atomic_open(path) as fh:
        # Level 1: these files live for one render; speed beats the last 20 % of size.
        image.save(fh, format="PNG", compress_level=1)
