"""``POST /v1/copy/drafts``: copy drafts from the product's facts, for the merchant to pick.

The copywriter (a chat model, media.copywriting) is built on first use and writes one request
at a time per API process: on two cores a second request would only slow the first. A request
that cannot get the copywriter within a few seconds is told to retry (503, Retry-After).
"""

from __future__ import annotations

import threading
from typing import Annotated, Literal

from fastapi import Body
from pydantic import BaseModel, ConfigDict, Field

from media.copywriting.brief import Brief, limits_for
from media.copywriting.writer import Copywriter, build_copywriter
from media.errors import InputError
from media.job import clean_field, text_language
from media.templates import get_template
from workers.api.deps import Ctx, Merchant, router
from workers.api.errors import ApiError, error_responses, input_error
from workers.settings import Settings

# How long a request waits for the copywriter another request holds.
WAIT_S = 5.0


class CopyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product: Annotated[str, Field(min_length=1, max_length=80, description="The product's name")]
    price: Annotated[str | None, Field(max_length=24)] = None
    offer: Annotated[str | None, Field(max_length=60, description="e.g. 2 for 1 this week")] = None
    store: Annotated[str | None, Field(max_length=40)] = None
    notes: Annotated[
        str | None, Field(max_length=200, description="Anything else true to say about it")
    ] = None
    template: Annotated[str, Field(max_length=40)] = "showcase"
    language: Literal["auto", "en", "ko"] = "auto"
    drafts: Annotated[int | None, Field(ge=1, le=5)] = None


class CopyDraft(BaseModel):
    headline: str
    subline: str = Field(description="Sent as the job's description")
    cta: str
    narration: str = Field(description="Sent as the job's narration_script")


class CopyDrafts(BaseModel):
    drafts: list[CopyDraft]
    source: str = Field(description='"llm:<model>", or "template" when no model wrote one')
    reason: str | None = Field(default=None, description="Why the template's copy is offered")
    rejected: dict[str, int] = Field(description="Drafts dropped, by the rule they broke")
    seconds: float


class CopyDesk:
    """The process's copywriter, built on first use, one request at a time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._writer: Copywriter | None = None
        self._lock = threading.Lock()

    def write(self, brief: Brief, template_id: str, n: int) -> CopyDrafts:
        template = get_template(template_id, self._settings.media.templates_dir)
        if not self._lock.acquire(timeout=WAIT_S):
            raise ApiError(
                503,
                "busy",
                "the copywriter is writing for another request; try again shortly",
                headers={"Retry-After": "10"},
            )
        try:
            if self._writer is None:
                self._writer = build_copywriter(self._settings)
            result = self._writer.write(brief, limits_for(template, brief.language), template, n)
        finally:
            self._lock.release()
        return CopyDrafts(
            drafts=[CopyDraft(**vars(d)) for d in result.drafts],
            source=result.source,
            reason=result.reason,
            rejected=result.counts(),
            seconds=round(result.seconds, 2),
        )


def _brief(req: CopyRequest) -> Brief:
    def opt(value: str | None) -> str | None:
        return (clean_field(value) or None) if value else None

    product = clean_field(req.product)
    if not product:
        raise InputError("product: must not be blank", field="product")
    language = req.language
    if language == "auto":
        language = text_language(f"{product} {req.notes or ''}")
    return Brief(
        product=product,
        language=language,
        price=opt(req.price),
        offer=opt(req.offer),
        store=opt(req.store),
        notes=opt(req.notes),
    )


@router.post(
    "/v1/copy/drafts",
    response_model=CopyDrafts,
    responses=error_responses(400, 401, 422, 503),
)
def draft_copy(ctx: Ctx, merchant: Merchant, req: Annotated[CopyRequest, Body()]) -> CopyDrafts:
    """Copy drafts (headline, subline, call to action, narration) written from the facts.
    Nothing a draft states is outside them (numbers, offers, claims are checked); when no
    model writes a draft that passes, the template's copy comes back with the reason."""
    try:
        brief = _brief(req)
        desk: CopyDesk = ctx.copydesk
        return desk.write(brief, req.template, req.drafts or ctx.settings.copywriter.drafts)
    except InputError as exc:
        raise input_error(exc) from None
