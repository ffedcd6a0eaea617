"""The rules a drafted copy must pass before a merchant sees it (pure).

A draft is text a model made up; the merchant's facts are the only truth. So beyond lengths
and cleaning (the same cleaning as text a merchant types), a draft may not state a number
that is not in the facts (a price, a discount, a count), nor an offer when none was given,
nor a superlative or guarantee the facts do not make. What fails is reported with the rule,
so that drafts can be measured, not just dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from media.copywriting.brief import Brief, Limits
from media.job import HANGUL, clean_field

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_LATIN = re.compile(r"[A-Za-z]")
_UNFINISHED = re.compile(r"([,;:\-—]|\b(and|or|the|a|an|of|with|to))$", re.IGNORECASE)
_LINK = re.compile(r"https?:|www\.|\S@\S|[<>{}\[\]`]", re.IGNORECASE)
# Claims only the facts can make: superlatives, guarantees, health and award claims.
_CLAIMS = (
    "best", "#1", "number one", "guarantee", "guaranteed", "cheapest", "lowest", "proven",
    "clinically", "award", "cure", "cures", "world's", "unbeatable", "most", "only one",
    "최고", "최저", "보장", "1위", "치료", "최상",
)  # fmt: skip
# Words that announce an offer: only when the merchant gave one.
_OFFERS = (
    "sale", "discount", "deal", "free", "save", "% off", "limited", "today only", "hurry",
    "bogo", "할인", "세일", "무료", "특가", "한정", "증정",
)  # fmt: skip


@dataclass(frozen=True)
class Draft:
    headline: str
    subline: str
    cta: str
    narration: str


class Rejected(ValueError):
    """A draft broke a rule: ``rule`` names which (for counting), the message says where."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _numbers(text: str) -> set[str]:
    """Numbers as values: "4,500" is 4500, "24.00" is 24."""
    out = set()
    for n in _NUMBER.findall(text):
        n = n.replace(",", "")
        if "." in n:
            n = n.rstrip("0").rstrip(".")
        out.add(n.lstrip("0") or "0")
    return out


def _has(text: str, phrase: str) -> bool:
    """``phrase`` in ``text`` as a word (Latin) or anywhere (Hangul, which glues particles on)."""
    if HANGUL.search(phrase) or not phrase[0].isalnum():
        return phrase in text
    return re.search(rf"(?<![\w]){re.escape(phrase)}(?![\w])", text) is not None


def check(draft: Draft, brief: Brief, limits: Limits) -> Draft:
    """The draft cleaned, or :class:`Rejected` with the first rule it breaks."""
    cleaned = Draft(**{f.name: clean_field(getattr(draft, f.name)) for f in fields(Draft)})
    bounds = {
        "headline": (1, limits.headline),
        "subline": (1, limits.subline),
        "cta": (1, limits.cta),
        "narration": (limits.narration_min, limits.narration_max),
    }
    facts = brief.fact_text().lower()
    allowed_numbers = _numbers(facts)
    for name, (low, high) in bounds.items():
        text: str = getattr(cleaned, name)
        if not low <= len(text) <= high:
            raise Rejected("length", f"{name}: {len(text)} characters (allowed {low} to {high})")
        if _LINK.search(text):
            raise Rejected("markup", f"{name}: links, addresses and markup are not ad copy")
        lowered = text.lower()
        invented = sorted(_numbers(lowered) - allowed_numbers)
        if invented:
            raise Rejected("number", f"{name}: says {invented[0]!r}, which is not in the facts")
        for claim in _CLAIMS:
            if _has(lowered, claim) and not _has(facts, claim):
                raise Rejected("claim", f"{name}: claims {claim!r}, which the facts do not")
        if brief.offer is None:
            for word in _OFFERS:
                if _has(lowered, word) and not _has(facts, word):
                    raise Rejected("offer", f"{name}: announces an offer ({word!r}); none given")
    for name, (_, high) in bounds.items():
        text = getattr(cleaned, name)
        # The grammar stops a field at its limit, mid-word; a model may also stop mid-clause.
        if len(text) >= high or _UNFINISHED.search(text):
            raise Rejected("unfinished", f"{name}: stops mid-phrase ({text[-20:]!r})")
    sentences = [x.strip().lower() for x in re.split(r"[.!?。]+", cleaned.narration) if x.strip()]
    if len(set(sentences)) < len(sentences):
        raise Rejected("repetition", "narration: says the same sentence twice")
    spoken = cleaned.headline + " " + cleaned.narration
    if brief.language == "ko" and not HANGUL.search(cleaned.narration):
        raise Rejected("language", "narration: not in Korean")
    if brief.language == "en" and (
        HANGUL.search(spoken) or len(_LATIN.findall(spoken)) < len(spoken.replace(" ", "")) // 2
    ):
        raise Rejected("language", "headline or narration: not in English")
    if not _names_product(spoken, brief.product):
        raise Rejected("product", "headline and narration never name the product")
    return cleaned


def _names_product(text: str, product: str) -> bool:
    """Some word of the product's name (3+ characters) is in ``text``."""
    lowered = text.lower()
    words = [w for w in re.findall(r"\w+", product.lower()) if len(w) >= 3 or HANGUL.search(w)]
    return not words or any(w in lowered for w in words)
