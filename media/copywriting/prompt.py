"""What the model is asked: a system prompt with the rules, the facts, and one tool whose
arguments are the draft (pure). A local model answers under a grammar built from the tool's
schema (voice.engines.toolgrammar), so the draft always arrives as well-formed JSON within the
lengths below; a remote model gets the same tool through function calling."""

from __future__ import annotations

from typing import Any

from media.copywriting.brief import Brief, Limits
from voice.engines.contracts import Message, ToolSpec

TOOL_NAME = "write_ad"

_LANGUAGE_NAMES = {"en": "English", "ko": "Korean (한국어)"}

SYSTEM = (
    "You write the copy of short video ads for small shops. Write warm, concrete, plain "
    "sentences a narrator can read aloud. Use only the facts you are given: never invent "
    "prices, numbers, discounts, awards or claims such as 'best'. Call write_ad once."
)


def tool(limits: Limits) -> ToolSpec:
    def text(description: str, longest: int) -> dict[str, Any]:
        return {"type": "string", "description": description, "maxLength": longest}

    return ToolSpec(
        name=TOOL_NAME,
        description="Write one ad: headline, subline, call to action and narration.",
        parameters={
            "type": "object",
            "properties": {
                "headline": text("A few catchy words naming the product", limits.headline),
                "subline": text("One short sentence about the product", limits.subline),
                "cta": text("A call to action of two to four words", limits.cta),
                "narration": text(
                    "Two or three short sentences the narrator reads: the product, why it is "
                    "good, the price if given",
                    limits.narration_max,
                ),
            },
            "required": ["headline", "subline", "cta", "narration"],
        },
    )


def messages(brief: Brief, limits: Limits, *, variant: int = 0) -> list[Message]:
    """The conversation for one draft. ``variant`` asks for a different angle per draft, so
    several drafts differ by more than sampling noise."""
    angles = (
        "Focus on how the product feels to use.",
        "Focus on who the product is for.",
        "Focus on what makes the product special.",
        "Keep it very short and punchy.",
        "Make it sound warm and personal.",
    )
    facts = "\n".join(f"{label}: {value}" for label, value in brief.facts())
    user = (
        f"{facts}\n\nWrite the ad in {_LANGUAGE_NAMES[brief.language]}. "
        f"{angles[variant % len(angles)]} The narration is two or three short sentences, "
        f"about {(limits.narration_min + limits.narration_max) // 2} characters in all."
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
