"""Brand colours over any template (pure): pills in the accent, the end card in the primary
where its texts stay readable, text on a recoloured block in black or white."""

from __future__ import annotations

import pytest

from media.brandkit.colours import Brand, apply_brand, contrast, readable_on
from media.templates import get_template

NAVY_RED = Brand(primary="#1D3557", accent="#E63946")
CREAM_TEAL = Brand(primary="#F1FAEE", accent="#2A9D8F")


@pytest.mark.parametrize("template_id", ["showcase", "sale", "news"])
@pytest.mark.parametrize("brand", [NAVY_RED, CREAM_TEAL])
def test_every_text_on_a_brand_colour_stays_readable(template_id: str, brand: Brand) -> None:
    branded = apply_brand(get_template(template_id), brand)
    for name, look in branded.styles.items():
        if look.background is not None and name != "captions":
            assert contrast(look.color, look.background) >= 4.5, (name, look)
    card = branded.end_card
    for name in card.text:
        look = branded.styles[name]
        if look.background is None:
            assert contrast(look.color, card.background) >= 4.5, (name, card.background)
    assert branded.styles["captions"].highlight == brand.accent


def test_pills_take_the_accent_and_a_matching_end_card_the_primary() -> None:
    showcase = apply_brand(get_template("showcase"), NAVY_RED)  # dark card, dark primary
    assert showcase.styles["price"].background == "#E63946"
    assert showcase.styles["cta"].background == "#E63946"
    assert showcase.end_card.background == "#1D3557"
    # A light primary under the showcase card's light texts would not read: the card keeps its own.
    kept = apply_brand(get_template("showcase"), CREAM_TEAL)
    assert kept.end_card.background == get_template("showcase").end_card.background
    assert kept.styles["price"].background == "#2A9D8F"
    news = apply_brand(get_template("news"), CREAM_TEAL)  # a light card takes a light primary
    assert news.end_card.background == "#F1FAEE"
    # Text over photos keeps the template's look; the template itself is unchanged.
    assert showcase.styles["headline"] == get_template("showcase").styles["headline"]
    assert get_template("showcase").styles["price"].background == "#F4C95D"


def test_readable_on_picks_black_or_white() -> None:
    assert readable_on("#FFD60A") == "#000000"
    assert readable_on("#1D3557") == "#FFFFFF"
