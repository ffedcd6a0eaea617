"""``/v1/brand``: a merchant's brand colours, kept in the job store, used by every job it
submits unless the job gives its own (``brand_primary``/``brand_accent``) or says
``brand=false``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Response

from media.brand import Brand
from workers.api.deps import Ctx, Merchant, router
from workers.api.errors import ApiError, error_responses
from workers.store import JobStore


def _key(store: JobStore, merchant: str) -> str:
    return f"{store.prefix}:brand:{merchant}"


def saved_brand(store: JobStore, merchant: str) -> Brand | None:
    raw = store.r.get(_key(store, merchant))
    return Brand.model_validate_json(raw) if raw else None


@router.put("/v1/brand", response_model=Brand, responses=error_responses(401, 422, 503))
def put_brand(ctx: Ctx, merchant: Merchant, brand: Annotated[Brand, Body()]) -> Brand:
    """Keep the merchant's colours: primary (end card, headline blocks) and accent (price and
    call-to-action pills, the spoken word in karaoke captions)."""
    ctx.store.r.set(_key(ctx.store, merchant), brand.model_dump_json())
    return brand


@router.get("/v1/brand", response_model=Brand, responses=error_responses(401, 404, 503))
def get_brand(ctx: Ctx, merchant: Merchant) -> Brand:
    brand = saved_brand(ctx.store, merchant)
    if brand is None:
        raise ApiError(404, "not_found", "no brand colours kept; PUT /v1/brand to keep some")
    return brand


@router.delete("/v1/brand", status_code=204, responses=error_responses(401, 503))
def delete_brand(ctx: Ctx, merchant: Merchant) -> Response:
    ctx.store.r.delete(_key(ctx.store, merchant))
    return Response(status_code=204)
