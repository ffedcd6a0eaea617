"""Response models: they make /openapi.json say what the API really returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from workers.store import Status


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, machine-readable: bad_input, unauthorized, ...")
    message: str = Field(description="For people; names the field or file at fault")
    field: str | None = Field(default=None, description="The form field at fault, if one is")


class ErrorBody(BaseModel):
    error: ErrorDetail


class JobError(BaseModel):
    code: str
    message: str


class JobOutput(BaseModel):
    format: str = Field(description="Aspect ratio: 9:16, 1:1 or 16:9")
    video_url: str
    thumbnail_url: str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    bytes: int | None = None


class WebhookAttempt(BaseModel):
    at: float = Field(description="Unix time")
    attempt: int
    event: str = Field(description="done, failed or cancelled")
    ok: bool
    status_code: int | None = None
    ms: float | None = None
    error: str | None = None


class Webhook(BaseModel):
    url: str
    deliveries: list[WebhookAttempt] = []


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_...: verifies the webhook-signature header")


class CaptionWord(BaseModel):
    text: str
    start: float = Field(description="Video seconds")
    end: float


class Caption(BaseModel):
    text: str
    start: float = Field(description="Video seconds (the same in every format)")
    end: float
    words: list[CaptionWord] = Field(default=[], description="Each word as it is spoken")


class Captions(BaseModel):
    style: str = Field(description="phrase, karaoke or pop")
    items: list[Caption]


class QualityLine(BaseModel):
    name: str = Field(description="loudness, true_peak, black_frames, frozen_frames, text, ...")
    status: str = Field(description="pass, warn, fail or skipped")
    detail: str
    hard: bool = Field(description="A hard check that fails flags the job")


class JobQuality(BaseModel):
    flagged: bool = Field(description="Some output failed a hard check: look before sending")
    outputs: dict[str, list[QualityLine]] = Field(description="By format")


class JobCopy(BaseModel):
    source: str = Field(description='"merchant", "llm:<model>", or "template"')
    note: str | None = Field(default=None, description="Why the template's copy was used")
    headline: str
    subline: str
    cta: str


class JobBrand(BaseModel):
    font: bool = Field(description="The job had a brand font")
    font_used: bool = Field(description="It set the text (it covers every character shown)")
    font_note: str | None = Field(default=None, description="Why the house font was used")
    music_track: bool = Field(description="The music is the merchant's track")


class Job(BaseModel):
    id: str
    status: Status
    stage: str = Field(description="queued, narrate, render 9:16, finalize, done, ...")
    percent: float = Field(ge=0, le=100)
    template: str
    formats: list[str]
    created: float = Field(description="Unix time")
    updated: float = Field(description="Unix time")
    error: JobError | None = None
    fields: dict[str, str | None] = Field(description="headline, price, cta, store")
    outputs: list[JobOutput] = Field(default=[], description="One per format, once done")
    preview_url: str | None = None
    duration_s: float | None = None
    copy_: JobCopy | None = Field(
        default=None, alias="copy", description="Once done: the copy shown, and who wrote it"
    )
    quality: JobQuality | None = Field(
        default=None, description="Once done: each output's quality report"
    )
    captions: Captions | None = Field(
        default=None, description="Once done: the captions shown, timed (e.g. for subtitles)"
    )
    brand: JobBrand | None = Field(
        default=None, description="Once done, with a brand font or track: how they were used"
    )
    webhook: Webhook | None = Field(
        default=None, description="Where the job is announced when it ends, and each attempt"
    )


class JobList(BaseModel):
    jobs: list[Job]
    limit: int
    offset: int


class TemplateInfo(BaseModel):
    id: str
    name: str
    description: str


class TemplateList(BaseModel):
    templates: list[TemplateInfo]


class ClientConfig(BaseModel):
    auth_required: bool
    max_images: int
    max_image_mb: int
    max_clip_mb: int
    max_font_mb: int
    max_track_mb: int
    max_request_mb: int
    formats: list[str]
    languages: list[str]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable"]
