"""What a copywriter is told: the product's facts, the language, and each field's limits."""

from __future__ import annotations

from dataclasses import dataclass

from media.templates import Language, Template

# Speaking rates of the embedded narrators, measured on their own ad scripts: Piper (en)
# reads ~14 characters a second, espeak-ng (ko) ~6 Hangul syllables and spaces a second.
CHARS_PER_SECOND: dict[Language, float] = {"en": 14.0, "ko": 6.0}
# An ad's narration: long enough to say something, short enough to hold attention.
MIN_SPEECH_S = 4.0
MAX_SPEECH_S = 20.0


@dataclass(frozen=True)
class Limits:
    """Characters per field. The job's own maxima bound them (headline 80, description 200,
    cta 40); these are tighter, for what reads on a phone."""

    headline: int = 40
    subline: int = 110
    cta: int = 24
    narration_min: int = 40
    narration_max: int = 280


@dataclass(frozen=True)
class Brief:
    """The facts of one product. Everything a draft may state comes from here."""

    product: str
    language: Language = "en"
    price: str | None = None
    offer: str | None = None
    store: str | None = None
    notes: str | None = None  # anything else the merchant wants said (material, origin...)

    def facts(self) -> list[tuple[str, str]]:
        """(label, value) of each fact given, in the order the prompt lists them."""
        pairs = [
            ("Product", self.product),
            ("Price", self.price),
            ("Offer", self.offer),
            ("Store", self.store),
            ("Details", self.notes),
        ]
        return [(label, value) for label, value in pairs if value]

    def fact_text(self) -> str:
        return " ".join(value for _, value in self.facts())


def limits_for(template: Template, language: Language) -> Limits:
    """Field limits for ``template``: the narration fits between MIN_SPEECH_S and what the
    template's timing leaves for speech (at most MAX_SPEECH_S), at the narrator's pace."""
    t = template.timing
    room = min(MAX_SPEECH_S, t.max_total_s - t.lead_in_s - t.tail_s)
    rate = CHARS_PER_SECOND[language]
    longest = max(MIN_SPEECH_S, room)
    if language == "ko":
        return Limits(
            headline=24,
            subline=60,
            cta=14,
            narration_min=round(MIN_SPEECH_S * rate),
            narration_max=round(longest * rate),
        )
    return Limits(narration_min=round(MIN_SPEECH_S * rate), narration_max=round(longest * rate))
