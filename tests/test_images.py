"""media.images on real photographs (scikit-image's bundled data) and on hostile uploads."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import warnings
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from PIL import ExifTags, Image, ImageCms, ImageFile, JpegImagePlugin

from media import images
from media.errors import InputError
from media.images import ImageLimits, PreparedImage, prepare_image, safe_name, sniff_format

RED = (230, 20, 20)


def _array(name: str) -> np.ndarray[Any, Any]:
    # skimage.data is untyped; its loaders return arrays from files inside the wheel.
    loader: Callable[[], np.ndarray[Any, Any]] = getattr(skimage.data, name)
    return loader()


@cache
def _photo(name: str) -> Image.Image:
    return Image.fromarray(_array(name)).convert("RGB")


def _encode(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _pixels(im: Image.Image) -> np.ndarray[Any, Any]:
    return np.asarray(im, dtype=np.float64)


def _mean_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(_pixels(a) - _pixels(b)).mean())


def _open(result: PreparedImage) -> Image.Image:
    im = Image.open(result.path)
    im.load()
    return im


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


@cache
def _blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG: tiny on disk, ``width * height`` pixels once decoded."""
    row = bytes(1 + (width + 7) // 8)
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    parts = [packer.compress(row * min(1000, height - y)) for y in range(0, height, 1000)]
    return _png(width, height, 1, 0, b"".join(parts) + packer.flush())


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _rgb_profile(red: tuple[float, float, float], blue: tuple[float, float, float]) -> bytes:
    """A minimal ICC v2 matrix/TRC RGB profile with sRGB's green and the given colorants."""
    d50 = (0.9642, 1.0, 0.8249)
    gamma = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256)) + bytes(2)
    tags = [(b"wtpt", _xyz(*d50)), (b"rXYZ", _xyz(*red)), (b"gXYZ", _xyz(0.3851, 0.7169, 0.0971))]
    tags += [(b"bXYZ", _xyz(*blue)), (b"rTRC", gamma), (b"gTRC", gamma), (b"bTRC", gamma)]
    first = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", first + len(body), len(data))
        body += data
    header = struct.pack(
        ">I4sI4s4s4s", first + len(body), b"", 0x02100000, b"mntr", b"RGB ", b"XYZ "
    )
    header += bytes(12) + b"acsp" + bytes(28) + b"".join(map(_s15, d50)) + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + body


# sRGB's red and blue colorants (D50), swapped: pixels tagged with this profile mean the
# colour with their red and blue channels exchanged.
SWAPPED_PROFILE = _rgb_profile(red=(0.1431, 0.0606, 0.7141), blue=(0.4361, 0.2225, 0.0139))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixels fails the test: the checks must come from the header."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"pixels of a {self.size} image were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("JPEG", {"quality": 95}),
        ("PNG", {}),
        ("WEBP", {"quality": 95}),
        ("HEIF", {"quality": 90}),
        ("BMP", {}),
        ("TIFF", {}),
    ],
)
def test_accepted_formats_become_an_upright_rgb_jpeg(
    fmt: str, params: dict[str, Any], out_dir: Path
) -> None:
    source = _photo("astronaut")
    result = prepare_image(_encode(source, fmt, **params), out_dir, name=f"shot.{fmt.lower()}")
    out = _open(result)
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", source.size)
    assert (result.width, result.height, result.has_alpha) == (512, 512, False)
    assert result.path.parent == out_dir
    assert result.path.suffix == ".jpg"
    assert _mean_diff(out, source) < 6


@pytest.mark.skipif(not images.avif_supported(), reason="this Pillow has no AVIF decoder")
def test_avif_is_decoded_by_pillow(out_dir: Path) -> None:
    source = _photo("coffee")
    result = prepare_image(_encode(source, "AVIF", quality=90), out_dir, name="coffee.avif")
    out = _open(result)
    assert out.size == source.size == (600, 400)
    assert _mean_diff(out, source) < 6


def test_avif_is_rejected_clearly_where_it_cannot_be_decoded(
    out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "avif_supported", lambda: False)
    avif_header = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(200)
    with pytest.raises(InputError, match=r"^coffee\.avif: AVIF images cannot be read here"):
        prepare_image(avif_header, out_dir, name="coffee.avif")


def test_gif_uses_its_first_frame(out_dir: Path) -> None:
    first = _photo("chelsea")
    second = Image.eval(first, lambda v: 255 - v)
    data = _encode(first, "GIF", save_all=True, append_images=[second], duration=100)
    out = _open(prepare_image(data, out_dir, name="cat.gif"))
    assert out.size == first.size
    assert _mean_diff(out, first) < 12 < _mean_diff(out, second)


def test_content_wins_over_the_file_name(out_dir: Path) -> None:
    source = _photo("rocket")
    result = prepare_image(_encode(source, "PNG"), out_dir, name="rocket.jpg")
    assert result.source_name == "rocket.jpg"
    assert _mean_diff(_open(result), source) < 3


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("JPEG", "jpeg"),
        ("PNG", "png"),
        ("WEBP", "webp"),
        ("HEIF", "heif"),
        ("GIF", "gif"),
        ("BMP", "bmp"),
        ("TIFF", "tiff"),
    ],
)
def test_sniff_format_reads_magic_bytes(fmt: str, expected: str) -> None:
    small = _photo("astronaut").resize((64, 64))
    assert sniff_format(_encode(small, fmt)) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "heif"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", "avif"),
        (b"\x00\x00\x00\x14ftypavis\x00\x00\x00\x00avis", "avif"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", None),  # an MP4 video
        (b"BMW is a car brand, not a bitmap", None),
        (b"%PDF-1.7\n", None),
        (b"", None),
    ],
)
def test_sniff_format_on_containers_and_lookalikes(data: bytes, expected: str | None) -> None:
    assert sniff_format(data) == expected


# --- normalization -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "HEIF"])
def test_exif_orientation_6_is_applied_once(fmt: str, out_dir: Path) -> None:
    stored = _photo("chelsea").copy()  # 451x300, as the camera sensor wrote it
    stored.paste(RED, (0, 0, 40, 40))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "rotate 90° clockwise to display"
    # Given EXIF bytes, pillow_heif also writes the rotation as a HEIF "irot" transform, as
    # iPhones do: the decoder applies it and the EXIF tag must then not rotate a second time.
    data = _encode(stored, fmt, quality=95, exif=exif.tobytes())
    assert fmt != "HEIF" or b"irot" in data

    result = prepare_image(data, out_dir, name="sideways.jpg")
    out = _open(result)
    assert out.size == (result.width, result.height) == (300, 451)
    # A clockwise quarter turn moves the stored top-left corner to the top-right.
    top_right = np.asarray(out.crop((270, 5, 295, 30))).reshape(-1, 3).mean(axis=0)
    top_left = np.asarray(out.crop((5, 5, 30, 30))).reshape(-1, 3).mean(axis=0)
    assert top_right[0] > 180 and top_right[1] < 70
    assert not (top_left[0] > 180 and top_left[1] < 70)
    assert _mean_diff(out, stored.transpose(Image.Transpose.ROTATE_270)) < 4


def test_cmyk_jpeg_becomes_rgb_with_its_colours(out_dir: Path) -> None:
    source = _photo("coffee")
    data = _encode(source.convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = _open(prepare_image(data, out_dir, name="print-shop.jpg"))
    assert out.mode == "RGB"
    assert _mean_diff(out, source) < 6
    per_channel = np.abs(_pixels(out).mean(axis=(0, 1)) - _pixels(source).mean(axis=(0, 1)))
    assert per_channel.max() < 3


def test_16_bit_grayscale_png_is_scaled_not_clipped(out_dir: Path) -> None:
    gray = _photo("astronaut").convert("L")
    deep = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    data = _encode(deep, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = _open(prepare_image(data, out_dir, name="scan.png"))
    assert out.mode == "RGB"
    assert _mean_diff(out.convert("L"), gray) < 2


def test_16_bit_rgb_png_becomes_8_bit_rgb(out_dir: Path) -> None:
    source = _photo("rocket")
    width, height = source.size
    samples = (np.asarray(source).astype(">u2") * 257).view(np.uint8).reshape(height, width * 6)
    rows = np.hstack([np.zeros((height, 1), np.uint8), samples])  # filter byte 0 per row
    data = _png(width, height, 16, 2, zlib.compress(rows.tobytes()))
    out = _open(prepare_image(data, out_dir, name="deep.png"))
    assert (out.mode, out.size) == ("RGB", source.size)
    assert _mean_diff(out, source) < 4  # JPEG q92 noise; a wrong byte order is ~80


def test_grayscale_photo_becomes_rgb(out_dir: Path) -> None:
    gray = Image.fromarray(_array("camera"))  # a real grayscale photograph
    assert gray.mode == "L"
    out = _open(prepare_image(_encode(gray, "PNG"), out_dir, name="bw.png"))
    assert out.mode == "RGB"
    assert _mean_diff(out.convert("L"), gray) < 3


def test_palette_logo_keeps_its_transparency(out_dir: Path) -> None:
    logo = _photo("rocket").quantize(colors=63)
    palette = logo.getpalette()
    assert palette is not None
    logo.putpalette([*palette, 255, 255, 255])  # entry 63: the transparent colour
    logo.paste(63, (0, 0, logo.width, 40))  # a transparent band along the top
    logo.info["transparency"] = 63
    data = _encode(logo, "PNG")

    result = prepare_image(data, out_dir, name="logo.png", kind="logo")
    out = _open(result)
    assert result.path.suffix == ".png"
    assert (out.format, out.mode, result.has_alpha) == ("PNG", "RGBA", True)
    alpha = np.asarray(out.getchannel("A"))
    assert alpha[:40].max() == 0
    assert alpha[40:].min() == 255


def test_logo_without_transparency_is_opaque_rgba(out_dir: Path) -> None:
    result = prepare_image(_encode(_photo("coffee"), "JPEG"), out_dir, name="logo.jpg", kind="logo")
    out = _open(result)
    assert (out.format, out.mode, result.has_alpha) == ("PNG", "RGBA", False)
    assert out.getchannel("A").getextrema() == (255, 255)


def test_photo_with_alpha_is_flattened_on_white(out_dir: Path) -> None:
    source = _photo("astronaut").convert("RGBA")
    alpha = Image.new("L", source.size, 255)
    alpha.paste(0, (0, 0, 256, 512))  # left half fully transparent
    source.putalpha(alpha)

    result = prepare_image(_encode(source, "WEBP", lossless=True), out_dir, name="cutout.webp")
    out = _open(result)
    assert (out.mode, result.has_alpha) == ("RGB", False)
    assert np.asarray(out.crop((0, 0, 250, 512))).min() > 245
    assert (
        _mean_diff(out.crop((262, 0, 512, 512)), source.convert("RGB").crop((262, 0, 512, 512))) < 4
    )


def test_big_jpeg_is_decoded_at_reduced_size_then_downscaled(
    out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = _photo("coffee").resize((6000, 4000), Image.Resampling.BILINEAR)
    data = _encode(big, "JPEG", quality=90)
    drafts: list[tuple[int, int]] = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: Any) -> Any:
        answer = original_draft(self, mode, size)
        if answer is not None:  # Pillow's later calls are no-ops once a draft is set
            drafts.append(self.size)
        return answer

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    result = prepare_image(data, out_dir, name="huge.jpg")
    assert (result.width, result.height) == (2160, 1440)
    assert drafts == [(3000, 2000)]  # libjpeg decoded at half scale, not 24 megapixels
    expected = big.resize((2160, 1440), Image.Resampling.LANCZOS)
    assert _mean_diff(_open(result), expected) < 4


def test_downscale_keeps_aspect_ratio(out_dir: Path) -> None:
    source = _photo("rocket")  # 640x427
    result = prepare_image(_encode(source, "PNG"), out_dir, name="r.png", max_output_side=320)
    out = _open(result)
    assert out.size == (result.width, result.height) == (320, 214)
    assert _mean_diff(out, source.resize(out.size, Image.Resampling.LANCZOS)) < 3


def test_no_metadata_is_written(out_dir: Path) -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
    }
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = _photo("chelsea")
    data = _encode(source, "JPEG", quality=95, exif=exif, icc_profile=srgb, comment=b"secret")
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.GPSInfo)

    for kind in ("photo", "logo"):
        result = prepare_image(data, out_dir, name="gps.jpg", kind=kind)
        written = result.path.read_bytes()
        out = _open(result)
        assert not out.getexif()
        assert not {"exif", "icc_profile", "comment", "xmp"} & set(out.info)
        assert b"Exif" not in written and b"PhoneCo" not in written and b"secret" not in written
        # The sRGB profile was applied, not just dropped: colours are unchanged.
        assert _mean_diff(out.convert("RGB"), source) < 4


@pytest.mark.parametrize("kind", ["photo", "logo"])
def test_colour_profile_is_applied_before_it_is_dropped(
    kind: images.ImageKind, out_dir: Path
) -> None:
    source = _photo("astronaut").convert("RGBA")
    source.putalpha(200)
    fmt = "PNG" if kind == "logo" else "JPEG"
    tagged = source if kind == "logo" else source.convert("RGB")
    data = _encode(tagged, fmt, icc_profile=SWAPPED_PROFILE)

    out = _open(prepare_image(data, out_dir, name="tagged.img", kind=kind))
    assert "icc_profile" not in out.info
    swapped = Image.merge("RGB", source.split()[2::-1])
    assert _mean_diff(out.convert("RGB") if kind == "logo" else out, swapped) < 5
    if kind == "logo":
        assert out.getchannel("A").getextrema() == (200, 200)


# --- limits and hostile input -------------------------------------------------------------


def test_decompression_bomb_is_rejected_from_its_header(out_dir: Path, no_decoding: None) -> None:
    bomb = _blank_png(40_000, 40_000)  # 1.6 gigapixels
    assert len(bomb) < 300_000
    with pytest.raises(
        InputError,
        match=r"^bomb\.png: the image is 1600 megapixels, more than the 50 megapixel limit$",
    ):
        prepare_image(bomb, out_dir, name="bomb.png")
    assert _files(out_dir) == []


def test_pixel_limit_is_checked_before_decoding(out_dir: Path, no_decoding: None) -> None:
    with pytest.raises(InputError) as caught:
        prepare_image(_blank_png(8000, 8000), out_dir, name="wall.png")
    assert str(caught.value) == (
        "wall.png: 8000x8000 pixels (64 megapixels) is more than the 50 megapixel limit"
    )
    assert caught.value.transient is False
    assert caught.value.fields == {"upload": "wall.png", "reason": "too_many_pixels"}


def test_pillow_bomb_warning_is_an_error_even_when_warnings_are_not(
    out_dir: Path, no_decoding: None
) -> None:
    # 90 megapixels: past Pillow's warning threshold, within a caller's generous limits.
    generous = ImageLimits(max_pixels=200_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        with pytest.raises(InputError, match="90 megapixels, more than the 200 megapixel limit"):
            prepare_image(_blank_png(10_000, 9_000), out_dir, name="pano.png", limits=generous)


@pytest.mark.parametrize(
    ("size", "limits", "message"),
    [
        ((20_000, 100), ImageLimits(), "20000x100 pixels is larger than the 12000 px limit"),
        (
            (9_000, 64),
            ImageLimits(max_side=8192),
            "9000x64 pixels is larger than the 8192 px limit",
        ),
        ((40, 40), ImageLimits(), "40x40 pixels is too small; each side must be at least 64 px"),
        ((500, 63), ImageLimits(), "500x63 pixels is too small; each side must be at least 64 px"),
    ],
)
def test_dimension_limits(
    size: tuple[int, int], limits: ImageLimits, message: str, out_dir: Path, no_decoding: None
) -> None:
    with pytest.raises(InputError) as caught:
        prepare_image(_blank_png(*size), out_dir, name="logo.png", limits=limits)
    assert str(caught.value) == f"logo.png: {message}"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "HEIF"])
def test_truncated_upload_is_rejected(fmt: str, out_dir: Path) -> None:
    data = _encode(_photo("astronaut"), fmt)
    with pytest.raises(InputError, match=r"^photo2\.jpg: the file is truncated or corrupt$"):
        prepare_image(data[: len(data) // 2], out_dir, name="photo2.jpg")
    assert _files(out_dir) == []


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"Dear merchant, this is a text file.\n", ""),
        (random.Random(7).randbytes(4096), ""),
        (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "; it is a PDF document"),
        (
            b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
            "; it is an SVG drawing",
        ),
        (b"<!DOCTYPE html><html><body>hi</body></html>", "; it is a web page"),
    ],
)
def test_non_images_are_refused(data: bytes, hint: str, out_dir: Path) -> None:
    with pytest.raises(InputError) as caught:
        prepare_image(data, out_dir, name="photo.jpg")
    assert str(caught.value).startswith(
        f"photo.jpg: the file is not an image (JPEG, PNG, WebP, HEIC){hint}"
    )
    assert caught.value.fields["reason"] == "not_image"


def test_empty_upload_is_refused(out_dir: Path) -> None:
    with pytest.raises(InputError, match=r"^a\.png: the file is empty$"):
        prepare_image(b"", out_dir, name="a.png")


def test_oversized_bytes_are_refused_before_parsing(out_dir: Path, no_decoding: None) -> None:
    data = _encode(_photo("astronaut"), "PNG")  # about 415 KB
    with pytest.raises(
        InputError, match=r"^big\.png: the file is 4\d\d KB, more than the 100 KB limit$"
    ):
        prepare_image(data, out_dir, name="big.png", limits=ImageLimits(max_bytes=100 * 1024))
    with pytest.raises(InputError, match=r"more than the 20 MB limit$"):
        prepare_image(bytes(21 * 1024 * 1024), out_dir, name="big.png")


def test_path_upload_is_read_and_its_size_checked_with_stat(
    tmp_path: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(_encode(_photo("coffee"), "JPEG"))
    result = prepare_image(upload, out_dir, name="coffee.jpg")
    assert (result.width, result.height) == (600, 400)

    def refuse_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an oversized upload was opened")

    monkeypatch.setattr(Path, "open", refuse_open)
    with pytest.raises(InputError, match="more than the 1 KB limit"):
        prepare_image(upload, out_dir, name="coffee.jpg", limits=ImageLimits(max_bytes=1024))


# --- names and files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("photo 1.JPG", "photo_1.JPG"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\logo.png", "logo.png"),
        ("café crème.jpg", "cafe_creme.jpg"),
        ("фото.heic", "____.heic"),
        ("ｌｏｇｏ.png", "logo.png"),
        ("name\x00\n.jpg", "name__.jpg"),
        ("", "upload"),
        ("..", "upload"),
        ("dir/", "upload"),
        (".bashrc", "bashrc"),
        ("...hidden.png", "hidden.png"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_safe_name_caps_length_and_keeps_the_extension() -> None:
    cleaned = safe_name("x" * 300 + ".jpeg")
    assert len(cleaned) == 80
    assert cleaned.endswith("xx.jpeg")
    assert len(safe_name("y" * 300)) == 80


def test_error_messages_use_the_sanitized_name(out_dir: Path) -> None:
    with pytest.raises(InputError, match=r"^evil_\.jpg: the file is not an image"):
        prepare_image(b"junk", out_dir, name="../../tmp/evil\n.jpg")


def test_same_upload_twice_is_one_file(out_dir: Path) -> None:
    data = _encode(_photo("chelsea"), "JPEG")
    first = prepare_image(data, out_dir, name="a.jpg")
    second = prepare_image(data, out_dir, name="renamed.jpg")
    assert first.path == second.path == out_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.jpg"
    assert _files(out_dir) == [first.path.name]


def test_failed_write_leaves_no_partial_file(
    out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _encode(_photo("chelsea"), "JPEG")
    good = prepare_image(data, out_dir, name="a.jpg")
    before = good.path.read_bytes()

    def crash_midway(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        fp.write(b"\xff\xd8\xff half a JPEG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        prepare_image(data, out_dir, name="a.jpg")
    # The earlier result is intact and no temporary file was left behind.
    assert _files(out_dir) == [good.path.name]
    assert good.path.read_bytes() == before
