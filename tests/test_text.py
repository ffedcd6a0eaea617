"""Text layers: cleaning, line breaking, shrink-to-fit, truncation and the rendered PNG.

Everything runs against the real Noto Sans CJK KR font; two tests read the rendered headlines
back with tesseract, so a layer that "fits" but is illegible or garbled fails too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from media import fonts
from media.errors import InputError, MediaError
from media.fonts import font_path, load_font
from media.text import ELLIPSIS, RenderedText, TextStyle, clean_text, layout_text, render_text

ON_CI = os.environ.get("CI") == "true"

KOREAN = "오늘만 50% 할인! 지금 바로 주문하세요"
FFMPEG_SYNTAX = 'Don\'t: 50% [off]; "now", \\ back'
LONG_HEADLINE = "The biggest summer sale of the year is finally here for everyone"


def _open(rendered: RenderedText) -> Image.Image:
    with Image.open(rendered.path) as opened:
        image: Image.Image = opened.copy()
    assert image.mode == "RGBA"
    assert image.size == (rendered.width, rendered.height)
    return image


def _pixels(image: Image.Image) -> list[tuple[int, int, int, int]]:
    return list(image.getdata())


def _opaque_colours(image: Image.Image) -> set[tuple[int, int, int]]:
    return {(r, g, b) for r, g, b, a in _pixels(image) if a == 255}


def _corners(image: Image.Image) -> list[tuple[int, ...]]:
    w, h = image.size
    return [image.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]  # type: ignore[misc]


def _fits(rendered: RenderedText, box_w: int, box_h: int) -> bool:
    return (
        rendered.x >= 0
        and rendered.y >= 0
        and rendered.x + rendered.width <= box_w
        and rendered.y + rendered.height <= box_h
    )


# --- Font ------------------------------------------------------------------------------------


def test_bold_font_is_noto_sans_cjk_kr_bold() -> None:
    path, index = font_path("bold")
    assert path.is_file()
    assert load_font("bold", 40).getname() == ("Noto Sans CJK KR", "Bold")
    assert load_font("regular", 40).getname() == ("Noto Sans CJK KR", "Regular")
    assert load_font("bold", 40) is load_font("bold", 40)  # cached
    # Black ships only in fonts-noto-cjk-extra; without it, Bold stands in.
    assert load_font("black", 40).getname()[1] in ("Black", "Bold")
    assert index >= 0


def test_missing_font_raises_media_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no fc-match to ask
    monkeypatch.setattr(fonts, "KNOWN_DIRS", (tmp_path,))
    font_path.cache_clear()
    try:
        with pytest.raises(MediaError, match=r"install fonts-noto-cjk \(\./setup\.sh\)"):
            font_path("bold")
    finally:
        font_path.cache_clear()  # the next caller finds the real font again


# --- Cleaning --------------------------------------------------------------------------------


def test_clean_text_drops_emoji_and_control_characters() -> None:
    raw = "  Sale 😀 now\x07\u200b!\t\tok 👍🏽\x00\x1b[0m "
    assert clean_text(raw) == "Sale now! ok [0m"
    assert clean_text("🎉🎉🎉") == ""


def test_clean_text_normalizes_and_keeps_one_newline() -> None:
    assert clean_text("Cafe\u0301") == "Café"  # NFC: one code point, the font's glyph
    assert clean_text("\u1112\u1161\u11ab\u1100\u1173\u11af") == "한글"  # jamo compose
    assert clean_text("one\r\n\r\n\n  two \n\n three") == "one\ntwo\nthree"
    assert clean_text("a\u00a0\u3000b") == "a b"  # no-break and ideographic spaces


def test_clean_text_keeps_ffmpeg_syntax_characters() -> None:
    assert clean_text(FFMPEG_SYNTAX) == FFMPEG_SYNTAX


# --- Layout ----------------------------------------------------------------------------------


def test_short_headline_keeps_max_size_on_one_line() -> None:
    size, lines, truncated = layout_text("Summer Sale", 1000, 300, TextStyle())
    assert (size, lines, truncated) == (96, ["Summer Sale"], False)


def test_long_headline_shrinks_and_stays_inside_the_box(tmp_path: Path) -> None:
    style = TextStyle()
    rendered = render_text(LONG_HEADLINE, 700, 300, style, tmp_path)
    assert style.min_size <= rendered.size < style.max_size
    assert not rendered.truncated
    assert len(rendered.lines) <= style.max_lines
    assert " ".join(rendered.lines) == LONG_HEADLINE
    assert _fits(rendered, 700, 300)


def test_very_long_text_is_truncated_with_an_ellipsis_at_min_size(tmp_path: Path) -> None:
    text = "lorem ipsum dolor sit amet consectetur " * 40
    style = TextStyle(max_lines=2)
    rendered = render_text(text, 600, 200, style, tmp_path)
    assert rendered.size == style.min_size
    assert rendered.truncated
    assert len(rendered.lines) == 2
    assert rendered.lines[-1].endswith(ELLIPSIS)
    assert text.startswith(" ".join(rendered.lines)[: -len(ELLIPSIS)])
    assert _fits(rendered, 600, 200)


def test_tiny_box_goes_below_min_size_rather_than_overflow(tmp_path: Path) -> None:
    rendered = render_text(LONG_HEADLINE, 60, 18, TextStyle(), tmp_path)
    assert rendered.size < 28
    assert rendered.truncated
    assert rendered.lines[-1].endswith(ELLIPSIS)
    assert _fits(rendered, 60, 18)


def test_words_are_not_split_when_they_fit() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta"
    style = TextStyle(max_size=40, min_size=40, max_lines=8)
    _, lines, truncated = layout_text(text, 260, 1000, style)
    assert not truncated
    assert len(lines) > 2
    assert [line.split(" ") for line in lines] != [text.split(" ")]
    assert [word for line in lines for word in line.split(" ")] == text.split(" ")


@pytest.mark.reliability("input", "Korean (CJK) copy wraps inside its box")
def test_korean_breaks_at_spaces_only(tmp_path: Path) -> None:
    rendered = render_text(KOREAN, 420, 600, TextStyle(max_size=60, min_size=60), tmp_path)
    assert len(rendered.lines) > 1
    assert [w for line in rendered.lines for w in line.split(" ")] == KOREAN.split(" ")
    assert _fits(rendered, 420, 600)


def test_a_single_long_token_breaks_between_characters() -> None:
    token = "Supercalifragilisticexpialidocious" * 2
    style = TextStyle(max_size=40, min_size=40, max_lines=10)
    _, lines, truncated = layout_text(token, 300, 2000, style)
    assert not truncated
    assert len(lines) > 1
    assert "".join(lines) == token
    assert all(load_font("bold", 40).getlength(line) <= 300 for line in lines)


def test_cjk_breaks_between_characters_but_not_before_closing_punctuation() -> None:
    text = "今日だけ、全品半額！お早めにどうぞ。新商品も入荷しました。"
    style = TextStyle(max_size=48, min_size=48, max_lines=10)
    for box_w in (200, 230, 260, 300, 350):
        _, lines, _ = layout_text(text, box_w, 2000, style)
        assert "".join(lines) == text
        assert len(lines) > 1
        assert not any(line[0] in "、。！" for line in lines), lines


def test_explicit_newline_is_respected() -> None:
    _, lines, _ = layout_text("Summer Sale\n50% off", 1800, 600, TextStyle())
    assert lines == ["Summer Sale", "50% off"]
    _, lines, _ = layout_text("Summer Sale\n\n\n50% off", 1800, 600, TextStyle())
    assert lines == ["Summer Sale", "50% off"]


def test_hangul_and_latin_lines_are_spaced_equally(tmp_path: Path) -> None:
    style = TextStyle(max_size=60, min_size=60)
    one = render_text("Hg", 1000, 1000, style, tmp_path)
    latin = render_text("Hg\nxo", 1000, 1000, style, tmp_path)
    hangul = render_text("한글\n주문", 1000, 1000, style, tmp_path)
    assert latin.height == hangul.height > one.height


def test_uppercase_option() -> None:
    _, lines, _ = layout_text("order now", 1000, 300, TextStyle(uppercase=True))
    assert lines == ["ORDER NOW"]


@pytest.mark.reliability("input", "right-to-left, emoji-only and control-character copy")
def test_right_to_left_and_emoji_only_text_never_crash(tmp_path: Path) -> None:
    for text in ("שלום עולם", "مرحبا بالعالم", "😀🎉"):
        rendered = render_text(text, 500, 200, TextStyle(), tmp_path)
        assert _fits(rendered, 500, 200)
    mixed = render_text("Sale שלום 50%", 800, 200, TextStyle(), tmp_path)
    assert mixed.lines == ("Sale 50%",)  # the font has no Hebrew: no tofu boxes
    empty = render_text("😀🎉", 500, 200, TextStyle(background="#000000"), tmp_path)
    assert empty.lines == ()
    assert _pixels(_open(empty)) == [(0, 0, 0, 0)]


def test_invalid_style_or_box_raises_input_error() -> None:
    with pytest.raises(InputError, match="colour"):
        layout_text("Sale", 500, 200, TextStyle(color="white"))
    with pytest.raises(InputError, match="colour"):
        layout_text("Sale", 500, 200, TextStyle(background="#12345"))
    with pytest.raises(InputError, match="1x1"):
        layout_text("Sale", 0, 200, TextStyle())
    with pytest.raises(InputError, match="min_size"):
        layout_text("Sale", 500, 200, TextStyle(min_size=50, max_size=40))
    with pytest.raises(InputError, match="too small"):
        layout_text("Sale", 30, 30, TextStyle(padding=20))


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(
        alphabet=st.sampled_from(list("aZ 0%한글漢字かな、。,.!?:;'\"[]\\\n😀\x07\tשلا…-")),
        max_size=120,
    ),
    box=st.tuples(st.integers(48, 1200), st.integers(48, 500)),
    max_size=st.integers(20, 120),
    max_lines=st.integers(1, 4),
    stroke=st.integers(0, 8),
    shadow=st.booleans(),
    padding=st.integers(0, 10),
    align=st.sampled_from(["left", "center", "right"]),
)
def test_any_text_renders_inside_its_box(
    tmp_path_factory: pytest.TempPathFactory,
    text: str,
    box: tuple[int, int],
    max_size: int,
    max_lines: int,
    stroke: int,
    shadow: bool,
    padding: int,
    align: str,
) -> None:
    style = TextStyle(
        max_size=max_size,
        min_size=min(max_size, 16),
        max_lines=max_lines,
        stroke=stroke,
        shadow=shadow,
        padding=padding,
        background="#202020" if padding else None,
        align=align,  # type: ignore[arg-type]
    )
    rendered = render_text(text, *box, style, tmp_path_factory.getbasetemp() / "fuzz")
    assert _fits(rendered, *box)
    assert _open(rendered).size == (rendered.width, rendered.height)
    assert len(rendered.lines) <= max_lines
    kept = "".join(rendered.lines).replace(" ", "").removesuffix(ELLIPSIS)
    assert kept in clean_text(text).replace(" ", "").replace("\n", "")


# --- Pixels ----------------------------------------------------------------------------------


def test_english_headline_is_opaque_text_on_transparent_corners(tmp_path: Path) -> None:
    rendered = render_text("Summer Sale", 1000, 300, TextStyle(color="#FFD400"), tmp_path)
    image = _open(rendered)
    assert all(pixel[3] == 0 for pixel in _corners(image))
    opaque = [p for p in _pixels(image) if p[3] == 255]
    assert len(opaque) > 0.15 * rendered.width * rendered.height
    assert _opaque_colours(image) == {(0xFF, 0xD4, 0x00)}
    # Tight: the ink touches the left and right edges; vertically every line is at least as
    # tall as "Hg한" (cap, descender, Hangul), so that text touches all four.
    assert image.getchannel("A").getbbox() == (0, 4, rendered.width, 82)
    reference = _open(render_text("Hg한", 1000, 300, TextStyle(), tmp_path))
    assert reference.getchannel("A").getbbox() == (0, 0, *reference.size)


def test_korean_headline_renders_in_the_requested_colour(tmp_path: Path) -> None:
    rendered = render_text(KOREAN, 900, 400, TextStyle(color="#E63946"), tmp_path)
    image = _open(rendered)
    assert rendered.lines == ("오늘만 50% 할인!", "지금 바로 주문하세요")
    assert _opaque_colours(image) == {(0xE6, 0x39, 0x46)}
    assert all(pixel[3] == 0 for pixel in _corners(image))


def test_translucent_colour_caps_the_alpha(tmp_path: Path) -> None:
    image = _open(render_text("Sale", 500, 200, TextStyle(color="#FFFFFF80"), tmp_path))
    assert max(a for *_, a in _pixels(image)) == 0x80


def test_background_pill_colour_and_rounded_corners(tmp_path: Path) -> None:
    style = TextStyle(background="#E63946", padding=24, radius=30, color="#FFFFFF")
    rendered = render_text("Order now", 1000, 300, style, tmp_path)
    image = _open(rendered)
    assert image.getpixel((3, rendered.height // 2)) == (0xE6, 0x39, 0x46, 255)
    assert image.getpixel((rendered.width // 2, 3)) == (0xE6, 0x39, 0x46, 255)
    assert all(pixel[3] == 0 for pixel in _corners(image))  # rounded away
    assert _opaque_colours(image) >= {(0xE6, 0x39, 0x46), (0xFF, 0xFF, 0xFF)}
    square = _open(render_text("Order now", 1000, 300, TextStyle(background="#000000AA"), tmp_path))
    assert all(pixel == (0, 0, 0, 0xAA) for pixel in _corners(square))


def test_stroke_outlines_the_text_in_its_colour(tmp_path: Path) -> None:
    style = TextStyle(stroke=8, stroke_color="#000000", color="#FFFFFF")
    plain = render_text("Sale", 1000, 300, TextStyle(), tmp_path)
    outlined = render_text("Sale", 1000, 300, style, tmp_path)
    assert _opaque_colours(_open(outlined)) >= {(0, 0, 0), (255, 255, 255)}
    assert outlined.width == plain.width + 2 * 8  # the outline is inside the tight box


def test_shadow_is_soft_and_dark_and_still_fits(tmp_path: Path) -> None:
    plain = render_text("Sale", 400, 200, TextStyle(), tmp_path)
    shaded = render_text("Sale", 400, 200, TextStyle(shadow=True), tmp_path)
    assert shaded.width > plain.width
    assert shaded.height > plain.height
    soft_dark = [p for p in _pixels(_open(shaded)) if 0 < p[3] < 200 and max(p[:3]) < 60]
    assert len(soft_dark) > 500
    assert _fits(shaded, 400, 200)


@pytest.mark.parametrize(
    ("align", "valign"), [("left", "top"), ("center", "middle"), ("right", "bottom")]
)
def test_alignment_places_the_image_in_the_box(tmp_path: Path, align: str, valign: str) -> None:
    style = TextStyle(align=align, valign=valign)  # type: ignore[arg-type]
    rendered = render_text("Sale", 900, 400, style, tmp_path)
    slack_x, slack_y = 900 - rendered.width, 400 - rendered.height
    expected = {"left": 0, "top": 0, "center": slack_x // 2, "middle": slack_y // 2}
    assert rendered.x == expected.get(align, slack_x)
    assert rendered.y == expected.get(valign, slack_y)


def test_lines_are_aligned_inside_the_image(tmp_path: Path) -> None:
    for align in ("left", "right"):
        style = TextStyle(align=align, max_size=60, min_size=60)
        rendered = render_text("Sale\nWWWWWWWW", 1200, 600, style, tmp_path)
        alpha = _open(rendered).getchannel("A")
        half = rendered.height // 2
        top = alpha.crop((0, 0, rendered.width, half)).getbbox()
        assert top is not None
        edge = top[0] if align == "left" else top[2]
        assert abs(edge - (0 if align == "left" else rendered.width)) <= 8


def test_render_is_deterministic_and_reuses_the_file(tmp_path: Path) -> None:
    style = TextStyle(shadow=True, stroke=4, background="#00000080", padding=10, radius=12)
    first = render_text(KOREAN, 900, 400, style, tmp_path / "a")
    second = render_text(KOREAN, 900, 400, style, tmp_path / "b")
    assert first.path.name == second.path.name
    assert first.path.read_bytes() == second.path.read_bytes()
    mtime = first.path.stat().st_mtime_ns
    assert render_text(KOREAN, 900, 400, style, tmp_path / "a") == first
    assert first.path.stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "a").iterdir()] == [first.path.name]  # no temp left
    other = render_text(KOREAN, 900, 401, style, tmp_path / "a")
    assert other.path != first.path
    assert layout_text(KOREAN, 900, 400, style) == (first.size, list(first.lines), first.truncated)


# --- Read back with OCR ----------------------------------------------------------------------


def _ocr(rendered: RenderedText, lang: str, tmp_path: Path) -> str:
    """Tesseract's reading of the layer, dark text put on white and scaled up."""
    return _ocr_image(_open(rendered), lang, tmp_path)


def _ocr_image(layer: Image.Image, lang: str, tmp_path: Path) -> str:
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        if ON_CI:
            pytest.fail(
                "tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-kor)"
            )
        pytest.skip("tesseract is not installed")
    langs = subprocess.run(
        [tesseract, "--list-langs"], capture_output=True, text=True, timeout=30, check=True
    )
    if lang not in langs.stdout.split():
        if ON_CI:
            pytest.fail(f"tesseract has no {lang} data (apt-get install tesseract-ocr-{lang})")
        pytest.skip(f"tesseract has no {lang} data")
    margin = 40
    page = Image.new("RGB", (layer.width + 2 * margin, layer.height + 2 * margin), "white")
    page.paste(layer, (margin, margin), layer)
    page = page.resize((page.width * 2, page.height * 2), Image.Resampling.LANCZOS)
    png = tmp_path / f"ocr-{lang}.png"
    page.save(png)
    out = subprocess.run(
        [tesseract, str(png), "-", "-l", lang, "--psm", "6"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def test_ocr_reads_back_an_english_headline(tmp_path: Path) -> None:
    style = TextStyle(color="#111111", max_size=64)
    rendered = render_text("SUMMER SALE: 50% OFF [today]", 700, 400, style, tmp_path)
    assert len(rendered.lines) == 2
    words = _ocr(rendered, "eng", tmp_path).split()
    for word in ("SUMMER", "SALE:", "50%", "OFF", "[today]"):
        assert word in words, words


def test_ocr_reads_back_a_korean_headline(tmp_path: Path) -> None:
    style = TextStyle(color="#111111", max_size=64)
    rendered = render_text(KOREAN, 900, 400, style, tmp_path)
    text = _ocr(rendered, "kor", tmp_path).replace(" ", "")
    for word in ("오늘만", "할인", "지금", "바로", "주문하세요"):
        assert word in text, text


@pytest.mark.reliability("input", "quotes, colons, %, brackets, backslashes: drawn literally (OCR)")
def test_ffmpeg_syntax_text_renders_literally(tmp_path: Path) -> None:
    rendered = render_text(FFMPEG_SYNTAX, 1600, 400, TextStyle(color="#111111"), tmp_path)
    assert rendered.lines == (FFMPEG_SYNTAX,)
    assert _opaque_colours(_open(rendered)) == {(0x11, 0x11, 0x11)}
    # Read back: every quote, colon, percent sign, bracket and backslash is drawn as itself.
    read = _ocr(rendered, "eng", tmp_path).strip()
    assert read.translate(str.maketrans("‘’“”", "''\"\"")) == FFMPEG_SYNTAX


def _lit(image: Image.Image, colour: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """The bounding box of the opaque pixels in ``colour`` (left, top, right, bottom)."""
    mask = Image.new("L", image.size, 0)
    mask.putdata([255 if p[3] == 255 and p[:3] == colour else 0 for p in _pixels(image)])
    return mask.getbbox()


@pytest.mark.parametrize(
    ("text", "index", "style"),
    [
        ("Fresh coffee roasted every morning in our studio", 6, TextStyle(stroke=5)),
        # Upper-cased, and a word that cleans to nothing (an emoji) before the lit one.
        ("Grab it 🎉 today only", 3, TextStyle(uppercase=True, stroke=5)),
        (KOREAN, 3, TextStyle(stroke=5)),
    ],
)
def test_karaoke_emphasis_lights_only_its_word(
    text: str, index: int, style: TextStyle, tmp_path: Path
) -> None:
    box = (900, 260)
    yellow = (0xFF, 0xD6, 0x0A)
    plain = render_text(text, *box, style, tmp_path)
    states = [
        render_text(text, *box, style, tmp_path, emphasis=k) for k in range(len(text.split()))
    ]
    # Every state has the same layout: the caption never jumps as the words light up.
    assert {(s.width, s.height, s.x, s.y, s.lines) for s in states} == {
        (plain.width, plain.height, plain.x, plain.y, plain.lines)
    }
    assert _lit(_open(plain), yellow) is None
    lit = _lit(_open(states[index]), yellow)
    assert lit is not None
    # The lit pixels sit on one word: narrower than a third of the line, inside one line's band.
    left, top, right, bottom = lit
    assert right - left < plain.width / 3
    assert bottom - top < plain.height / max(1, len(plain.lines)) + 2 * 5
    # And they spell that word: only the lit pixels, black on white, read as the word (OCR).
    crop = _open(states[index]).crop((left - 4, top - 4, right + 4, bottom + 4))
    layer = Image.new("RGBA", crop.size, (0, 0, 0, 0))
    layer.putdata(
        [
            (0, 0, 0, 255) if p[3] == 255 and p[:3] == yellow else (0, 0, 0, 0)
            for p in crop.getdata()
        ]
    )
    word = text.split()[index]
    ocr_lang = "kor" if word[0] >= "\uac00" else "eng"
    read = _ocr_image(layer, ocr_lang, tmp_path).replace(" ", "").strip()
    assert read.lower() == word.lower(), read
