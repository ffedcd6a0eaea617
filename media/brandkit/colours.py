"""A merchant's brand colours applied to any template (pure).

Two colours: ``primary`` (the end card, and a headline that sits on a block of colour) and
``accent`` (the price and call-to-action pills, the spoken word in karaoke captions). Text on a
recoloured block becomes black or white, whichever reads better on it (WCAG contrast). The end
card takes the primary colour only where its own texts stay readable: a template whose end
card is dark (light texts) takes a dark primary, a light one a light primary; otherwise it keeps
its own background and only the pills carry the brand.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from media.templates import TEXT_FIELDS, Template, TextLook

_COLOR = r"^#[0-9A-Fa-f]{6}$"
# The end-card fields a primary colour would sit behind.
_PILLS_IN_ACCENT = ("price", "cta")


class Brand(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    primary: Annotated[str, Field(pattern=_COLOR, description="#RRGGBB")]
    accent: Annotated[str, Field(pattern=_COLOR, description="#RRGGBB")]


def _luminance(color: str) -> float:
    """WCAG relative luminance of ``#RRGGBB``."""

    def channel(hex2: str) -> float:
        c = int(hex2, 16) / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(color[i : i + 2]) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a[:7]), _luminance(b[:7])), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable_on(background: str) -> str:
    """Black or white text, whichever contrasts more with ``background``."""
    return (
        "#000000"
        if contrast("#000000", background) >= contrast("#FFFFFF", background)
        else "#FFFFFF"
    )


def _shade(color: str, factor: float) -> str:
    r, g, b = (round(int(color[i : i + 2], 16) * factor) for i in (1, 3, 5))
    return f"#{r:02X}{g:02X}{b:02X}"


def _on_block(look: TextLook, block: str) -> TextLook:
    return look.model_copy(update={"background": block, "color": readable_on(block)})


def apply_brand(template: Template, brand: Brand) -> Template:
    """``template`` in ``brand``'s colours (a new Template; the original is unchanged)."""
    styles = dict(template.styles)
    for name in TEXT_FIELDS:
        look = styles.get(name)
        if look is None or look.background is None:
            continue  # text straight over a photo keeps its look: it was chosen for photos
        block = brand.accent if name in _PILLS_IN_ACCENT else brand.primary
        styles[name] = _on_block(look, block)
    if "captions" in styles:
        styles["captions"] = styles["captions"].model_copy(update={"highlight": brand.accent})
    card = template.end_card
    # The card's own unpilled texts were drawn for its background: keep them readable.
    loose = [styles[f].color for f in card.text if f in styles and styles[f].background is None]
    if all(contrast(c, brand.primary) >= 4.5 for c in loose):
        dark = _luminance(brand.primary) < 0.18
        card = card.model_copy(
            update={
                "background": brand.primary,
                "background_to": _shade(brand.primary, 0.55 if dark else 0.85),
            }
        )
    return template.model_copy(update={"styles": styles, "end_card": card})
