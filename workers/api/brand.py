"""``/v1/brand``: a merchant's brand kit (media.brandkit), kept in the job store and used by
every job it submits unless the job gives its own or says ``brand=false``.

* ``PUT /v1/brand``: the colours (JSON); ``PUT /v1/brand/{logo,font,music_track}``: a file
  (multipart ``file``), checked as thoroughly as a job would check it, so a kit never holds
  something a job would fail on;
* ``GET /v1/brand``: what is kept (files described, not returned);
* ``DELETE /v1/brand`` (all of it) or ``/v1/brand/{part}``.

Files are kept in Redis beside the colours (a few MB each, within the settings' limits): the
kit is small, read at every submission, and a job copies what it uses into its own folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, File, Response, UploadFile
from pydantic import BaseModel

from media.brandkit.colours import Brand
from media.brandkit.font import inspect_font
from media.brandkit.track import TrackLimits, prepare_track
from media.errors import InputError
from media.images import ImageLimits, prepare_image
from workers.api.deps import Ctx, Merchant, router
from workers.api.errors import error_responses, input_error
from workers.api.limits import MB, read_capped
from workers.jobs import Upload
from workers.settings import Settings
from workers.store import JobStore

BrandFile = Literal["logo", "font", "music_track"]
FILES: tuple[BrandFile, ...] = ("logo", "font", "music_track")


class KeptFile(BaseModel):
    name: str
    bytes: int
    details: dict[str, Any]  # what the check found: a font's family and languages, a track's length


class BrandKit(BaseModel):
    primary: str | None = None
    accent: str | None = None
    logo: KeptFile | None = None
    font: KeptFile | None = None
    music_track: KeptFile | None = None


def _key(store: JobStore, merchant: str) -> str:
    return f"{store.prefix}:brand:{merchant}"


def _file_key(store: JobStore, merchant: str, part: BrandFile) -> str:
    return f"{store.prefix}:brand:{merchant}:{part}"


def saved_brand(store: JobStore, merchant: str) -> Brand | None:
    raw = store.r.get(_key(store, merchant))
    return Brand.model_validate_json(raw) if raw else None


def saved_file(store: JobStore, merchant: str, part: BrandFile) -> Upload | None:
    """The kit's ``part`` as an upload a job takes, or None."""
    name, data = store.r.hmget(_file_key(store, merchant, part), ["name", "data"])
    if not isinstance(name, bytes) or not isinstance(data, bytes):
        return None
    return Upload(name.decode(), data)


def check_file(settings: Settings, part: BrandFile, up: Upload) -> dict[str, Any]:
    """What a job would find on ``up`` as the kit's ``part`` (raises InputError if unusable)."""
    m = settings.media
    if part == "font":
        info = inspect_font(up.data, up.name, max_bytes=m.max_font_mb * MB)
        return {
            "family": info.family,
            "style": info.style,
            "format": info.format,
            "languages": list(info.languages),
        }
    with tempfile.TemporaryDirectory(prefix="castwork-brand-") as tmp:
        if part == "logo":
            limits = ImageLimits(max_bytes=m.max_image_mb * MB, max_pixels=m.max_image_pixels)
            image = prepare_image(up.data, Path(tmp), name=up.name, kind="logo", limits=limits)
            return {"width": image.width, "height": image.height}
        limits_t = TrackLimits(
            max_bytes=m.max_track_mb * MB, max_seconds=m.max_track_s, keep_s=m.track_keep_s
        )
        track = prepare_track(up.data, Path(tmp), name=up.name, limits=limits_t)
        return {
            "codec": track.codec,
            "seconds_used": round(track.duration_s, 2),
            "source_lufs": round(track.source_lufs, 1),
        }


def limit_mb(settings: Settings, part: BrandFile) -> int:
    """The upload limit of a kit file (and of a job's own): as the media settings say."""
    m = settings.media
    return {"logo": m.max_image_mb, "font": m.max_font_mb, "music_track": m.max_track_mb}[part]


def _kept(store: JobStore, merchant: str, part: BrandFile) -> KeptFile | None:
    name, size, details = store.r.hmget(
        _file_key(store, merchant, part), ["name", "bytes", "details"]
    )
    if not isinstance(name, bytes):
        return None
    return KeptFile(name=name.decode(), bytes=int(size or 0), details=json.loads(details or "{}"))


def _kit(store: JobStore, merchant: str) -> BrandKit:
    colours = saved_brand(store, merchant)
    return BrandKit(
        primary=colours.primary if colours else None,
        accent=colours.accent if colours else None,
        **{part: _kept(store, merchant, part) for part in FILES},
    )


@router.put("/v1/brand", response_model=Brand, responses=error_responses(401, 422, 503))
def put_brand(ctx: Ctx, merchant: Merchant, brand: Annotated[Brand, Body()]) -> Brand:
    """Keep the merchant's colours: primary (end card, headline blocks) and accent (price and
    call-to-action pills, the spoken word in karaoke captions)."""
    ctx.store.r.set(_key(ctx.store, merchant), brand.model_dump_json())
    return brand


@router.put(
    "/v1/brand/{part}",
    response_model=KeptFile,
    responses=error_responses(401, 413, 422, 503),
    summary="Keep the brand logo (image), font (TTF/OTF) or music track (MP3, M4A, Ogg...)",
)
def put_brand_file(
    ctx: Ctx, merchant: Merchant, part: BrandFile, file: Annotated[UploadFile, File()]
) -> KeptFile:
    up = read_capped(file, part, part, limit_mb(ctx.settings, part))
    try:
        details = check_file(ctx.settings, part, up)
    except InputError as exc:
        raise input_error(exc) from None
    mapping = {
        "name": up.name,
        "data": up.data,
        "bytes": len(up.data),
        "details": json.dumps(details),
    }
    ctx.store.r.hset(_file_key(ctx.store, merchant, part), mapping=mapping)  # type: ignore[arg-type]
    return KeptFile(name=up.name, bytes=len(up.data), details=details)


@router.get("/v1/brand", response_model=BrandKit, responses=error_responses(401, 503))
def get_brand(ctx: Ctx, merchant: Merchant) -> BrandKit:
    """The kept kit: colours, and the files described (empty fields: nothing kept)."""
    return _kit(ctx.store, merchant)


@router.delete("/v1/brand", status_code=204, responses=error_responses(401, 503))
def delete_brand(ctx: Ctx, merchant: Merchant) -> Response:
    """Forget the whole kit (jobs already submitted keep their copies)."""
    keys = [_key(ctx.store, merchant), *(_file_key(ctx.store, merchant, p) for p in FILES)]
    ctx.store.r.delete(*keys)
    return Response(status_code=204)


@router.delete("/v1/brand/{part}", status_code=204, responses=error_responses(401, 422, 503))
def delete_brand_part(
    ctx: Ctx, merchant: Merchant, part: Literal["colours", "logo", "font", "music_track"]
) -> Response:
    if part == "colours":
        ctx.store.r.delete(_key(ctx.store, merchant))
    else:
        ctx.store.r.delete(_file_key(ctx.store, merchant, part))
    return Response(status_code=204)
