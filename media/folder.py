"""A job's folder and its manifest: the one place that names a job's files.

Job folder::

    <jobs_dir>/<merchant>/<job_id>/
        uploads/    what the merchant sent (as received, names sanitized)
        inputs/     normalized photos and logo (media.images)
        work/       request.json, job.json, narration.json, soundtrack.wav, layer PNGs
        out/        ad-<9x16>-<digest>.mp4 per format, thumb-<9x16>.jpg, preview.mp4,
                    manifest.json (written last: its presence means the job is finished)

Merchants download the outputs under public names (``9x16.mp4``, ``thumb-9x16.jpg``,
``preview.mp4``): :meth:`Manifest.downloads`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from base.files import write_atomic
from media.job import JobSpec
from media.templates import Aspect

PREVIEW_FILE = "preview.mp4"

# A file a manifest names: a plain name in the job's out/ folder, never a path or a dotfile.
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]


def aspect_slug(aspect: str) -> str:
    """``9:16`` -> ``9x16``: an aspect as it appears in file names."""
    return aspect.replace(":", "x")


def video_file(aspect: Aspect, digest: str) -> str:
    """One format's video, named by what produced it: a changed plan is a new file."""
    return f"ad-{aspect_slug(aspect)}-{digest}.mp4"


def thumbnail_file(aspect: Aspect) -> str:
    return f"thumb-{aspect_slug(aspect)}.jpg"


@dataclass(frozen=True)
class JobPaths:
    root: Path

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def request_file(self) -> Path:
        return self.work / "request.json"

    @property
    def spec_file(self) -> Path:
        return self.work / "job.json"

    @property
    def narration_file(self) -> Path:
        return self.work / "narration.json"

    @property
    def soundtrack(self) -> Path:
        return self.work / "soundtrack.wav"

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"

    def make(self) -> None:
        for d in (self.uploads, self.inputs, self.work, self.out):
            d.mkdir(parents=True, exist_ok=True)

    def write_spec(self, file: Path, spec: JobSpec) -> None:
        """``spec`` as JSON in ``file``, its photos and logo named relative to the job folder
        where they are in it: the folder is copied to other machines (a shared object store),
        whose workers find them in their own copy."""
        data = spec.model_dump(mode="json")
        data["images"] = [self._relative(p) for p in spec.images]
        for name in _SINGLE_FILES:
            path = getattr(spec, name)
            data[name] = self._relative(path) if path is not None else None
        write_atomic(file, json.dumps(data, indent=2, ensure_ascii=False))

    def read_spec(self, file: Path) -> JobSpec:
        """The spec :meth:`write_spec` wrote, its relative paths taken from this folder."""
        data = json.loads(file.read_text(encoding="utf-8"))
        data["images"] = [str(self.root / p) for p in data["images"]]
        for name in _SINGLE_FILES:
            if data.get(name):
                data[name] = str(self.root / data[name])
        return JobSpec.model_validate(data)

    def _relative(self, path: Path) -> str:
        # An absolute path stays one (`castwork render` photos outside the folder; records
        # written before relative names): root / an absolute path is that path.
        return str(path.relative_to(self.root) if path.is_relative_to(self.root) else path)


# The spec's fields that name one file each, beside its photos.
_SINGLE_FILES = ("logo", "font", "music_track")


class _Record(BaseModel):
    # Records written by older versions may carry more: kept, never refused.
    model_config = ConfigDict(extra="allow", frozen=True)


class NarrationSummary(_Record):
    text: str = ""
    engine: str = ""
    duration_s: float = 0.0
    captions_aligned: bool = False
    loudness_lufs: float | None = None


class ManifestCopy(_Record):
    """The copy on screen, and who wrote it ("merchant", "llm:<model>", "template")."""

    source: str = "merchant"
    note: str | None = None  # e.g. why the template's copy stands in for the copywriter's
    headline: str = ""
    subline: str = ""
    cta: str = ""


class QualityCheck(_Record):
    """One line of an output's quality report (media.quality)."""

    name: str
    status: Literal["pass", "warn", "fail", "skipped"]
    detail: str
    hard: bool


class ManifestQuality(_Record):
    flagged: bool  # some output failed a hard check: look before sending it
    outputs: dict[str, list[QualityCheck]]  # by format


class ManifestCaption(_Record):
    """One caption as the videos show it (video seconds), with its words' times."""

    text: str
    start: float
    end: float
    words: list[tuple[str, float, float]] = []


class ManifestBrand(_Record):
    """The brand kit's files in this job: whether its font set the text (and why not)."""

    font: bool = False  # the job had a brand font
    font_used: bool = False
    font_note: str | None = None
    music_track: bool = False  # the job's music is the merchant's track


class ManifestOutput(_Record):
    format: Annotated[str, Field(pattern=r"^[0-9]{1,2}:[0-9]{1,2}$")]
    video: FileName
    thumbnail: FileName
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    duration_s: float | None = None
    bytes: int | None = None

    @property
    def video_download(self) -> str:
        return f"{aspect_slug(self.format)}.mp4"

    @property
    def thumbnail_download(self) -> str:
        return f"thumb-{aspect_slug(self.format)}.jpg"


class Manifest(_Record):
    """What a finished job made (``out/manifest.json``, and the job record in the store)."""

    template: str = ""
    language: str = ""
    narration: NarrationSummary = NarrationSummary()
    duration_s: float | None = None
    quality: ManifestQuality | None = None  # None: not checked (switched off, or older job)
    ad_copy: ManifestCopy | None = None  # None in manifests from before it was kept
    caption_style: str = ""
    captions: list[ManifestCaption] = []
    brand: ManifestBrand | None = None  # None: no brand font or music track in this job
    outputs: list[ManifestOutput]
    preview: FileName

    def downloads(self) -> dict[str, str]:
        """Public name -> file name in ``out/``, for every file a merchant may download."""
        files: dict[str, str] = {}
        for item in self.outputs:
            files[item.video_download] = item.video
            files[item.thumbnail_download] = item.thumbnail
        files[PREVIEW_FILE] = self.preview
        return files
