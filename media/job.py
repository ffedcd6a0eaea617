"""What a merchant asks for: the fields of one ad job, validated, and the YAML form of it.

The same model serves the API (multipart fields), `castwork render JOB.yaml` and the workers,
so a bad field fails the same way everywhere: an :class:`InputError` naming the field.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from media.brandkit.colours import Brand
from media.errors import InputError, first_error
from media.templates import ASPECTS, Aspect, CaptionStyle, Language

MAX_IMAGES = 8
HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")


def text_language(text: str) -> Language:
    """The language "auto" means for ``text``: Korean when it has Hangul, else English."""
    return "ko" if HANGUL.search(text) else "en"


def clean_field(value: str) -> str:
    # NFC so that decomposed Hangul (from macOS uploads) renders and speaks as syllables;
    # control characters out, runs of whitespace to one space.
    value = unicodedata.normalize("NFC", value)
    value = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C" or ch in "\n\t")
    return re.sub(r"\s+", " ", value).strip()


Headline = Annotated[str, Field(min_length=1, max_length=80)]
Price = Annotated[str, Field(max_length=24)]
Cta = Annotated[str, Field(min_length=1, max_length=40)]
Description = Annotated[str, Field(max_length=200)]
Store = Annotated[str, Field(max_length=40)]
Offer = Annotated[str, Field(max_length=60)]
Script = Annotated[str, Field(max_length=600)]


class JobSpec(BaseModel):
    """One ad: copy fields, photos, options. Paths are resolved by whoever built the spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: Annotated[str, Field(min_length=1, max_length=40)] = "showcase"
    headline: Headline
    price: Price | None = None
    cta: Cta = "Shop now"
    description: Description | None = None
    store: Store | None = None
    # A promotion the copy may announce ("2 for 1 this week"); only AI copy uses it.
    offer: Offer | None = None
    # The narration read aloud, instead of the template's (a copy draft the merchant picked).
    narration_script: Script | None = None
    # Ask the copywriter (media.copywriting) for the headline, subline, call to action and
    # narration from the facts; the template's copy is used when it cannot write one.
    write_copy: bool = False
    # The merchant's colours over the template's (media.brandkit.colours); None: the template's own.
    brand: Brand | None = None
    language: Literal["auto", "en", "ko"] = "auto"
    images: Annotated[list[Path], Field(min_length=1, max_length=MAX_IMAGES)]
    logo: Path | None = None
    # The merchant's font (TTF/OTF) for every text layer, and music track in place of the
    # template's music (media.brandkit); None: the house font and music.
    font: Path | None = None
    music_track: Path | None = None
    formats: Annotated[list[Aspect], Field(min_length=1, max_length=3)] = list(ASPECTS)
    captions: bool = True
    # None: the template's own caption style.
    caption_style: CaptionStyle | None = None
    music: bool = True
    narration: bool = True

    @field_validator("headline", "cta", mode="after")
    @classmethod
    def _required_text(cls, v: str) -> str:
        v = clean_field(v)
        if not v:
            raise ValueError("must not be blank")
        return v

    @field_validator("price", "description", "store", "offer", "narration_script", mode="after")
    @classmethod
    def _optional_text(cls, v: str | None) -> str | None:
        return (clean_field(v) or None) if v is not None else None

    @field_validator("formats", mode="after")
    @classmethod
    def _unique(cls, v: list[Aspect]) -> list[Aspect]:
        # Keep the canonical order so the same request always yields the same plan.
        return [a for a in ASPECTS if a in v]

    @property
    def resolved_language(self) -> Language:
        if self.language != "auto":
            return self.language
        text = " ".join(filter(None, [self.headline, self.description, self.cta, self.price]))
        return text_language(text)

    def copy_fields(self) -> dict[str, Any]:
        """The names a template's Jinja2 copy can use."""
        return {
            "headline": self.headline,
            "price": self.price,
            "cta": self.cta,
            "description": self.description,
            "store": self.store,
            "language": self.resolved_language,
        }


def parse_job(data: dict[str, Any], *, base_dir: Path | None = None) -> JobSpec:
    """Validate a job mapping; relative image paths are taken from ``base_dir``."""
    if base_dir is not None:
        data = dict(data)
        if isinstance(data.get("images"), list):
            data["images"] = [_resolve(base_dir, p) for p in data["images"]]
        for name in ("logo", "font", "music_track"):
            if isinstance(data.get(name), str):
                data[name] = _resolve(base_dir, data[name])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise job_error(exc) from None


def job_error(exc: ValidationError) -> InputError:
    loc, message = first_error(exc, default="job")
    return InputError(f"{loc}: {message}", field=loc)


def _resolve(base: Path, value: Any) -> Any:
    if isinstance(value, str):
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    return value


def load_job_file(path: Path) -> JobSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the job: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a job file is a YAML mapping of fields")
    return parse_job(data, base_dir=path.parent)
