"""Turn one untrusted merchant upload (a product photo or a logo) into an image ffmpeg can read.

Merchants send whatever their phone or design tool produced: HEIC straight from an iPhone,
CMYK JPEGs from a print shop, 16-bit PNGs, palette logos with transparency, photos that are
stored sideways with an EXIF orientation flag, and now and then a PDF, an SVG or a file that
is not an image at all. :func:`prepare_image` accepts the good ones and writes one
normalized file (8-bit sRGB, upright, at most ``max_output_side`` px on its longer side, no
metadata) into ``out_dir``; anything else raises :class:`media.errors.InputError`, a
permanent error whose message names the upload and says what is wrong in plain words.

Safety, in the order it is applied (each step runs before the next costs anything):

* the byte size is checked before anything is parsed (for a ``Path``, with ``stat``);
* the type is decided by magic bytes (:func:`sniff_format`), never by the name or a claimed
  MIME type, and Pillow is only allowed to try the plugin of that one format;
* width, height and pixel count are checked from the header, before any pixel is decoded.
  Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, left at its default)
  may fire first for huge headers; it is reported as the same kind of error. Because Pillow's
  guard stays on, ``ImageLimits.max_pixels`` above Pillow's ceiling (about 89 megapixels)
  has no effect;
* truncated or corrupt data is an error: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set.

Formats: JPEG, PNG, WebP, HEIC/HEIF (through ``pillow_heif``) and AVIF are accepted; GIF,
BMP and TIFF are accepted as their first frame. AVIF is decoded by Pillow's own AVIF plugin
(Pillow >= 11.2 built with libavif; pillow-heif 1.x no longer decodes AVIF). Where the
installed Pillow has no AVIF support, AVIF uploads are rejected with a message that asks for
JPEG, PNG, WebP or HEIC instead. HEIC rotation comes from the file's own transforms
(``irot``/``imir``, applied by libheif, as iPhones write them); pillow_heif then neutralises
the EXIF orientation tag, so it never rotates a second time.

Output: ``<first 16 hex of sha256(input)>.jpg`` for photos (flattened on white, JPEG
quality 92) or ``.png`` for logos (RGBA, alpha kept), written atomically so a crash never
leaves a half-written file under the final name, and the same upload always maps to the same
file. Embedded colour profiles are converted to sRGB before they are dropped, so a Display P3
iPhone photo keeps its colours after its metadata is stripped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import struct
import threading
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import pillow_heif
from PIL import Image, ImageCms, ImageFile, ImageOps, features

from base.files import atomic_open
from media.errors import InputError

__all__ = [
    "ImageKind",
    "ImageLimits",
    "PreparedImage",
    "check_image_count",
    "prepare_image",
    "safe_name",
    "sniff_format",
]

pillow_heif.register_heif_opener()

ImageKind = Literal["photo", "logo"]

_ACCEPTED = "JPEG, PNG, WebP, HEIC"
_MB = 1024 * 1024

# The sniffed type -> the one Pillow plugin allowed to parse it.
_PIL_FORMAT = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "heif": "HEIF",
    "avif": "AVIF",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
}

# ISO-BMFF brands (the ``ftyp`` box) of still images.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_MIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2", b"miaf"})
# Sizes of the BMP info headers Pillow understands; "BM" alone would match plain text.
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})

# What Pillow and its plugins raise on data they cannot parse (pillow_heif: ValueError).
_DECODE_ERRORS = (OSError, SyntaxError, EOFError, ValueError, IndexError, struct.error)
_BOMB_ERRORS = (Image.DecompressionBombWarning, Image.DecompressionBombError)

_SAFE_NAME_MAX = 80
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")

_SRGB = ImageCms.createProfile("sRGB")

_JPEG_PARAMS: dict[str, Any] = {
    "format": "JPEG",
    "quality": 92,
    "subsampling": "4:2:0",
    "optimize": True,
}
_PNG_PARAMS: dict[str, Any] = {"format": "PNG"}

# warnings.catch_warnings swaps process-wide state; without the lock two threads (dramatiq
# runs several per process) could restore each other's filters in the wrong order.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024  # per file
    max_pixels: int = 50_000_000  # decompression-bomb guard, checked BEFORE decoding pixels
    max_side: int = 12_000
    min_side: int = 64


@dataclass(frozen=True)
class PreparedImage:
    path: Path  # the normalized file written into out_dir
    width: int
    height: int
    # True when the written file has transparency the renderer must honour: only logos can,
    # photos are flattened on white.
    has_alpha: bool
    source_name: str  # the sanitized original name


def safe_name(name: str) -> str:
    """The upload's name, safe for messages and logs: basename only, ``[A-Za-z0-9._-]``,
    at most 80 characters, never empty and never a dotfile."""
    base = re.split(r"[/\\]", name)[-1]
    # Fold accents ("café" -> "cafe") so the merchant still recognises the name.
    decomposed = unicodedata.normalize("NFKD", base)
    ascii_ish = "".join(c for c in decomposed if not unicodedata.combining(c))
    cleaned = _UNSAFE_CHARS.sub("_", ascii_ish).lstrip(".")
    if not cleaned:
        return "upload"
    return _truncate_keeping_extension(cleaned, _SAFE_NAME_MAX)


def _truncate_keeping_extension(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext) <= 10:
        return f"{stem[: limit - len(ext) - 1]}.{ext}"
    return name[:limit]


def sniff_format(data: bytes) -> str | None:
    """The image type by magic bytes: ``jpeg``, ``png``, ``webp``, ``heif``, ``avif``,
    ``gif``, ``bmp``, ``tiff``, or None when the bytes are not one of those."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:2] == b"BM" and int.from_bytes(data[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    return _sniff_isobmff(data)


def _sniff_isobmff(data: bytes) -> str | None:
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    box_end = min(int.from_bytes(data[:4], "big"), len(data), 1024)
    major = data[8:12]
    compatible = {data[i : i + 4] for i in range(16, box_end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "avif"
    if major in _HEIC_BRANDS or compatible & _HEIC_BRANDS:
        return "heif"
    if compatible & _AVIF_BRANDS:
        return "avif"
    # A bare HEIF container brand: let pillow_heif decide what the coded image is.
    return "heif" if major in _MIF_BRANDS else None


def avif_supported() -> bool:
    """Whether the installed Pillow can decode AVIF (its plugin needs libavif)."""
    return bool(features.check("avif"))


def prepare_image(
    data: bytes | Path,
    out_dir: Path,
    *,
    name: str,
    kind: ImageKind = "photo",
    limits: ImageLimits = ImageLimits(),
    max_output_side: int = 2160,
) -> PreparedImage:
    """Validate one upload and write its normalized form into ``out_dir``.

    Raises :class:`InputError` (permanent) when the upload cannot be used. OSErrors from
    reading a ``Path`` or writing ``out_dir`` are ours, not the merchant's, and propagate.
    """
    if max_output_side < 1 or kind not in ("photo", "logo"):
        raise ValueError(f"bad arguments: kind={kind!r}, max_output_side={max_output_side}")
    source_name = safe_name(name)
    raw = _read_upload(data, source_name, limits)
    pil_format = _pil_format(raw, source_name)
    im = _decode(raw, pil_format, source_name, limits, max_output_side)
    im, has_alpha = _finish(im, kind)
    extension, save_params = (".png", _PNG_PARAMS) if kind == "logo" else (".jpg", _JPEG_PARAMS)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{hashlib.sha256(raw).hexdigest()[:16]}{extension}"
    _write_atomically(im, target, save_params)
    return PreparedImage(
        path=target,
        width=im.width,
        height=im.height,
        has_alpha=has_alpha,
        source_name=source_name,
    )


def _fail(name: str, problem: str, reason: str) -> InputError:
    return InputError(f"{name}: {problem}", upload=name, reason=reason)


def _read_upload(data: bytes | Path, name: str, limits: ImageLimits) -> bytes:
    if isinstance(data, Path):
        size = data.stat().st_size
        if size > limits.max_bytes:
            raise _too_many_bytes(name, size, limits)
        with data.open("rb") as fh:
            # Read one byte past the limit: the file may have grown since stat().
            raw = fh.read(limits.max_bytes + 1)
    else:
        raw = data
    if len(raw) > limits.max_bytes:
        raise _too_many_bytes(name, len(raw), limits)
    if not raw:
        raise _fail(name, "the file is empty", "empty")
    return raw


def _too_many_bytes(name: str, size: int, limits: ImageLimits) -> InputError:
    problem = (
        f"the file is {_human_bytes(size)}, more than the {_human_bytes(limits.max_bytes)} limit"
    )
    return _fail(name, problem, "file_too_big")


def _human_bytes(size: int) -> str:
    if size < _MB:
        return f"{-(-size // 1024)} KB"
    return f"{size / _MB:.1f}".removesuffix(".0") + " MB"


def _pil_format(raw: bytes, name: str) -> str:
    kind = sniff_format(raw)
    if kind is None:
        raise _fail(
            name, f"the file is not an image ({_ACCEPTED}){_what_it_looks_like(raw)}", "not_image"
        )
    if kind == "avif" and not avif_supported():
        raise _fail(
            name,
            f"AVIF images cannot be read here; please upload {_ACCEPTED} instead",
            "unsupported",
        )
    return _PIL_FORMAT[kind]


def _what_it_looks_like(raw: bytes) -> str:
    """A hint for the uploads merchants most often send by mistake."""
    head = raw[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"%pdf"):
        return "; it is a PDF document"
    if b"<svg" in head:
        return "; it is an SVG drawing, please export it as PNG"
    if head.startswith((b"<!doctype html", b"<html")):
        return "; it is a web page"
    if raw[4:8] == b"ftyp":
        return "; it looks like a video"
    return ""


def _decode(
    raw: bytes, pil_format: str, name: str, limits: ImageLimits, max_side: int
) -> Image.Image:
    """Decode to an upright 8-bit sRGB image ("RGB" or "RGBA") no larger than ``max_side``."""
    im = _open_header(raw, pil_format, name, limits)
    _check_dimensions(im.size, name, limits)
    if max(im.size) > 2 * max_side:
        # JPEG only (a no-op elsewhere): let libjpeg decode at 1/2, 1/4 or 1/8 scale.
        im.draft(None, _fit(im.size, max_side))
    _load(im, name, limits)
    _apply_orientation(im)
    icc = im.info.get("icc_profile")
    flat = _to_8bit(im, name)
    flat.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return _to_srgb(flat, icc if isinstance(icc, bytes) else None)


def _open_header(
    raw: bytes, pil_format: str, name: str, limits: ImageLimits
) -> ImageFile.ImageFile:
    with _WARNINGS_LOCK, warnings.catch_warnings():
        # Pillow reports malformed metadata as warnings; we drop metadata anyway, and a
        # header that cannot be parsed still fails below as an exception.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(raw), formats=[pil_format])
        except _BOMB_ERRORS as exc:
            raise _pillow_bomb(name, exc, limits) from None
        except _DECODE_ERRORS as exc:
            raise _corrupt(name) from exc


def _corrupt(name: str) -> InputError:
    return _fail(name, "the file is truncated or corrupt", "corrupt")


def _pillow_bomb(name: str, exc: Exception, limits: ImageLimits) -> InputError:
    # Pillow's message is the only place its guard states the size; fall back if it changes.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    limit = f"the {_megapixels(limits.max_pixels)} megapixel limit"
    if found is None:
        return _fail(name, f"the image has more pixels than {limit}", "too_many_pixels")
    pixels = int(found.group(1))
    return _fail(
        name, f"the image is {_megapixels(pixels)} megapixels, more than {limit}", "too_many_pixels"
    )


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.1f}".removesuffix(".0")


def _check_dimensions(size: tuple[int, int], name: str, limits: ImageLimits) -> None:
    width, height = size
    shown = f"{width}x{height} pixels"
    if max(width, height) > limits.max_side:
        raise _fail(name, f"{shown} is larger than the {limits.max_side} px limit", "too_large")
    if width * height > limits.max_pixels:
        problem = (
            f"{shown} ({_megapixels(width * height)} megapixels) is more than the "
            f"{_megapixels(limits.max_pixels)} megapixel limit"
        )
        raise _fail(name, problem, "too_many_pixels")
    if min(width, height) < limits.min_side:
        problem = f"{shown} is too small; each side must be at least {limits.min_side} px"
        raise _fail(name, problem, "too_small")


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _load(im: ImageFile.ImageFile, name: str, limits: ImageLimits) -> None:
    try:
        im.load()
    except _BOMB_ERRORS as exc:
        # GIF frames can declare a larger size than the header Pillow checked at open.
        raise _pillow_bomb(name, exc, limits) from None
    except _DECODE_ERRORS as exc:
        raise _corrupt(name) from exc


def _apply_orientation(im: Image.Image) -> None:
    # Unreadable EXIF is common from cheap editors; the pixels are fine, so keep them as
    # stored rather than reject the photo.
    with contextlib.suppress(*_DECODE_ERRORS):
        ImageOps.exif_transpose(im, in_place=True)


def _to_8bit(im: Image.Image, name: str) -> Image.Image:
    """To "L", "RGB", "RGBA" or "CMYK" (CMYK waits for its colour profile, see _to_srgb)."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _high_depth_to_l(im)
    try:
        if im.has_transparency_data:
            # LA, PA, La, RGBa, and P/L/RGB with a transparent colour (PNG tRNS, GIF).
            return im if im.mode == "RGBA" else im.convert("RGBA")
        if im.mode in ("L", "RGB", "CMYK"):
            return im
        return im.convert("L" if im.mode == "1" else "RGB")
    except ValueError as exc:
        problem = f"the image uses a colour format that cannot be converted ({im.mode})"
        raise _fail(name, problem, "unsupported") from exc


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    # Pillow's own conversion to "L" clips at 255 instead of scaling, which would turn a
    # 16-bit image almost white.
    as_float = im.convert("F")
    # A single-band "F" image has float extrema; Pillow's return type covers all modes.
    brightest = float(cast(float, as_float.getextrema()[1]))
    scale = _depth_scale(im.mode, brightest)
    return as_float.point(lambda value: value * scale).convert("L")


def _depth_scale(mode: str, brightest: float) -> float:
    if mode.startswith("I;16"):
        return 255 / 65535
    # "I" and "F" do not say their range: infer it from the brightest pixel.
    if mode == "F" and brightest <= 1.0:
        return 255.0
    if brightest <= 255:
        return 1.0
    if brightest <= 65535:
        return 255 / 65535
    return 255 / brightest


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    if icc is not None and im.mode in ("RGB", "RGBA", "CMYK"):
        converted = _apply_icc(im, icc)
        if converted is not None:
            return converted
    return im if im.mode in ("RGB", "RGBA") else im.convert("RGB")


def _apply_icc(im: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        expected = "CMYK" if im.mode == "CMYK" else "RGB"
        if source.profile.xcolor_space.strip() != expected:
            return None
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, source, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        # Broken profiles are common in the wild; Pillow's plain conversion is a better
        # outcome than rejecting the upload.
        return None


def _finish(im: Image.Image, kind: ImageKind) -> tuple[Image.Image, bool]:
    """The final pixels for ``kind`` and whether they carry transparency."""
    if kind == "logo":
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
        opaque = rgba.getchannel("A").histogram()[255]
        return rgba, opaque < rgba.width * rgba.height
    if im.mode != "RGBA":
        return im, False
    # JPEG has no alpha, and transparent areas would otherwise come out black.
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im, mask=im.getchannel("A"))
    return background, False


def _write_atomically(im: Image.Image, target: Path, params: dict[str, Any]) -> None:
    # Pillow's JPEG and PNG writers carry over some of im.info (comment, colour profile);
    # clearing it is what guarantees that no metadata (EXIF, GPS, XMP) is written out.
    im.info = {}
    with atomic_open(target, durable=True) as fh:
        im.save(fh, **params)


def check_image_count(count: int, limit: int) -> None:
    """A job has 1 to ``limit`` photos (``media.max_images``): the one place for that rule."""
    if count < 1:
        raise InputError("images: at least one photo is needed", field="images")
    if count > limit:
        raise InputError(f"images: {count} photos; at most {limit}", field="images")
