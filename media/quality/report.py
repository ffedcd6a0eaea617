"""The quality report of one output: what to expect from its plan, measured, judged."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from media.narration import Phrase
from media.plan import RenderPlan
from media.quality.checks import Check, Expected, assess, legible
from media.quality.measure import analyse, read_texts

# The end card's texts are read this long before the end: every entry animation has landed.
READ_BEFORE_END_S = 0.2


def _kind(name: str) -> str:
    """A layer's name without its index: "headline@0" and "headline@2" are one headline."""
    base, _, where = name.partition("@")
    return f"{base}@end" if where == "end" else base


def expected(
    plan: RenderPlan,
    *,
    captions: Sequence[Phrase],
    speech: tuple[float, float] | None,
    captions_aligned: bool,
) -> Expected:
    texts: dict[str, str] = {}
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for layer in plan.layers:
        if layer.kind != "text":
            continue
        x, y, w, h = layer.box
        boxes.setdefault(
            _kind(layer.name),
            (x / plan.width, y / plan.height, (x + w) / plan.width, (y + h) / plan.height),
        )
        if layer.name.endswith("@end") and layer.text:
            texts[layer.name.removesuffix("@end")] = layer.text
    card = next(c for c in plan.clips if c.kind == "card")
    return Expected(
        audio=plan.audio is not None,
        end_card_start_s=card.start,
        texts=texts,
        captions=captions,
        speech=speech,
        captions_aligned=captions_aligned,
        boxes=boxes,
        feed=plan.aspect == "9:16",
    )


def inspect(
    video: Path,
    plan: RenderPlan,
    *,
    captions: Sequence[Phrase],
    speech: tuple[float, float] | None,
    captions_aligned: bool,
    language: str,
    ocr: bool = True,
) -> list[Check]:
    """Measure ``video`` (rendered from ``plan``) and judge it. Blocking."""
    want = expected(plan, captions=captions, speech=speech, captions_aligned=captions_aligned)
    measures = analyse(video, has_audio=want.audio)
    if ocr:
        boxes = {
            layer.name.removesuffix("@end"): (layer.box, layer.text)
            for layer in plan.layers
            if layer.kind == "text" and layer.name.endswith("@end") and layer.text
        }
        at = max(0.0, measures.duration_s - READ_BEFORE_END_S)
        read = read_texts(video, at, boxes, language, legible=legible)
        measures = dataclasses.replace(measures, read=read)
    return assess(measures, want)
