"""The ad renderer's settings section, and :class:`RenderSettings`: what a render reads
(narration needs the voice engines' TTS and ASR sections too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from base.settings import Seconds, Section
from voice.settings import LlmBackend, VoiceSettings


class MediaSettings(Section):
    """Ad-video rendering."""

    # x264 preset at CRF 23. bench/render.py, 15 s of 1080x1920 on 2 cores: superfast 0.51-0.58x
    # real time (4.5 MB), ultrafast 0.46x (10.4 MB), veryfast 0.70-0.84x (2.8 MB).
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = (
        "superfast"
    )
    crf: Annotated[int, Field(ge=0, le=51)] = 23
    # Photos are scaled to this multiple of the frame before Ken Burns motion (smoothness).
    oversample: Annotated[float, Field(ge=1.0, le=3.0)] = 1.5
    # ffmpeg's own limit per encode; below jobs.time_limit_s (checked), so a slow render fails
    # with its own reason before dramatiq interrupts the whole stage.
    render_timeout_s: Seconds = 600.0
    # Time captions with Whisper word timestamps (else by character count within sentences).
    align_captions: bool = True
    # espeak-ng voice for Korean narration (Piper's embedded voice speaks English only).
    korean_voice: str = "ko"
    max_images: Annotated[int, Field(ge=1, le=8)] = 8
    max_image_mb: Annotated[int, Field(ge=1, le=200)] = 20
    max_image_pixels: Annotated[int, Field(ge=1_000_000, le=200_000_000)] = 50_000_000
    # Video clips among the photos (media/clips.py): upload size, length, and how much of a
    # clip is kept (a scene is a few seconds; the rest would only cost decoding time).
    max_clip_mb: Annotated[int, Field(ge=1, le=2000)] = 100
    max_clip_s: Annotated[float, Field(gt=0, le=600)] = 60.0
    clip_keep_s: Annotated[float, Field(ge=1, le=60)] = 10.0
    # A brand kit's font (TTF/OTF) and music track (media/brandkit): upload sizes, and the
    # track's length (its first track_keep_s seconds are used).
    max_font_mb: Annotated[int, Field(ge=1, le=100)] = 20
    max_track_mb: Annotated[int, Field(ge=1, le=500)] = 30
    max_track_s: Annotated[float, Field(gt=0, le=3600)] = 900.0
    track_keep_s: Annotated[float, Field(ge=10, le=600)] = 120.0
    # A quality report per output (media.quality): loudness, true peak, black and frozen
    # frames, captions against the speech, feed safe zones, and (quality_ocr) the end card
    # read back by Tesseract. ~1-3 s per output on 2 cores, in the render stage.
    quality_report: bool = True
    quality_ocr: bool = True
    # Extra templates (YAML) beside the bundled ones; same id here wins.
    templates_dir: Path | None = None


class CopywriterSettings(Section):
    """AI-written ad copy (media.copywriting)."""

    # The chat chain that writes drafts, in order (local GGUF or OpenAI-compatible, as for
    # ``llm.backends``; give a local one ``parallel = 1``: one request at a time). Empty: no
    # copywriter, the template's copy is offered. Empty by default because the embedded models
    # write copy not good enough to ship (bench/copywriter.py, README "Copy drafts").
    backends: list[LlmBackend] = []
    drafts: Annotated[int, Field(ge=1, le=5)] = 3
    timeout_s: Seconds = 60.0
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.8
    max_tokens: Annotated[int, Field(ge=64, le=2048)] = 320


class RenderSettings(VoiceSettings):
    media: MediaSettings = MediaSettings()
    copywriter: CopywriterSettings = CopywriterSettings()
