"""One ad job, stage by stage: prepare -> narrate -> render each format -> finalize.

Both `castwork render` (in process, no broker) and the Dramatiq actors call these functions,
so the two paths cannot drift. Every stage is **idempotent**: it reads what earlier stages
wrote into the job folder, writes its own results atomically, and returns early when they are
already there. That is what makes at-least-once delivery safe: a message delivered twice, or
redelivered after its worker was killed, finds the finished file and does nothing twice.

The job folder, its file names and the manifest are :mod:`media.folder`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from base.files import atomic_open, atomic_path
from media import ffmpeg
from media.brandkit.colours import apply_brand
from media.brandkit.font import FontChoice, choose_font, inspect_font
from media.brandkit.track import TrackLimits, load_track, prepare_track
from media.clips import ClipLimits, prepare_clip, sniff_video
from media.copywriting.brief import Brief, limits_for
from media.copywriting.policy import Draft
from media.copywriting.writer import Copywriter, build_copywriter
from media.errors import InputError
from media.folder import (
    PREVIEW_FILE,
    JobPaths,
    Manifest,
    ManifestBrand,
    ManifestCaption,
    ManifestCopy,
    ManifestOutput,
    ManifestQuality,
    NarrationSummary,
    QualityCheck,
    thumbnail_file,
    video_file,
)
from media.graph import EncodeOptions
from media.images import ImageLimits, check_image_count, prepare_image
from media.job import JobSpec
from media.music import synthesize
from media.narration import Narration, Phrase, narrate, phrases_from_rows
from media.plan import FPS, RenderPlan, Timeline, plan_render, plan_timeline
from media.quality.report import inspect
from media.render import render_plan
from media.settings import MediaSettings, RenderSettings
from media.soundtrack import MixReport, MixSpec, mix
from media.templates import Aspect, Copy, Template, get_template, render_all_copy
from media.text import has_glyph
from voice.engines.contracts import Synthesizer, Transcriber

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (stage, share of that stage done 0..1)
Cancel = Callable[[], bool]


def write_json(path: Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def template_for(spec: JobSpec, settings: RenderSettings) -> Template:
    """The job's template, from :func:`media.templates.catalogue`, in its brand's colours."""
    template = get_template(spec.template, settings.media.templates_dir)
    return apply_brand(template, spec.brand) if spec.brand else template


# --- Stage 1: prepare -------------------------------------------------------------------


def _starts_like_a_video(path: Path) -> bool:
    with path.open("rb") as fh:
        return sniff_video(fh.read(1024)) is not None


def prepare(spec: JobSpec, paths: JobPaths, settings: RenderSettings) -> JobSpec:
    """Normalize photos, clips and logo into ``inputs/``; store the job with those paths."""
    if paths.spec_file.exists():
        return paths.read_spec(paths.spec_file)
    paths.make()
    m = settings.media
    check_image_count(len(spec.images), m.max_images)
    limits = ImageLimits(max_bytes=m.max_image_mb << 20, max_pixels=m.max_image_pixels)
    template_for(spec, settings)  # an unknown template fails before any work
    singles = [("logo", spec.logo), ("font", spec.font), ("music_track", spec.music_track)]
    for label, path in [*(("images", p) for p in spec.images), *singles]:
        if path is not None and not path.is_file():
            raise InputError(f"{label}: no such file: {path}", field=label)
    clip_limits = ClipLimits(
        max_bytes=m.max_clip_mb << 20, max_seconds=m.max_clip_s, keep_s=m.clip_keep_s
    )
    images = [
        prepare_clip(p, paths.inputs, name=p.name, limits=clip_limits).path
        if _starts_like_a_video(p)
        else prepare_image(p, paths.inputs, name=p.name, kind="photo", limits=limits).path
        for p in spec.images
    ]
    logo = None
    if spec.logo is not None:
        logo = prepare_image(
            spec.logo, paths.inputs, name=spec.logo.name, kind="logo", limits=limits
        ).path
    prepared = spec.model_copy(
        update={
            "images": images,
            "logo": logo,
            "font": _prepare_font(spec.font, paths, m) if spec.font else None,
            "music_track": _prepare_track(spec.music_track, paths, m) if spec.music_track else None,
        }
    )
    paths.write_spec(paths.spec_file, prepared)
    return prepared


def _prepare_font(source: Path, paths: JobPaths, m: MediaSettings) -> Path:
    """The checked font, copied into ``inputs/`` (its own name, and the suffix its format has)."""
    data = source.read_bytes()
    info = inspect_font(data, source.name, max_bytes=m.max_font_mb << 20)
    suffix = ".otf" if info.format.startswith("OpenType") else ".ttf"
    target = paths.inputs / f"font-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not target.exists():
        with atomic_open(target) as fh:
            fh.write(data)
    return target


def _prepare_track(source: Path, paths: JobPaths, m: MediaSettings) -> Path:
    limits = TrackLimits(
        max_bytes=m.max_track_mb << 20, max_seconds=m.max_track_s, keep_s=m.track_keep_s
    )
    return prepare_track(source, paths.inputs, name=source.name, limits=limits).path


# --- Stage 2: narrate -------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenCopy:
    """What the copywriter gave a job: a draft, or None and why."""

    draft: Draft | None
    source: str
    reason: str | None


@dataclass(frozen=True)
class NarrationInfo:
    """What later stages need from the narration (JSON in work/narration.json)."""

    text: str
    language: str
    duration_s: float
    engine: str
    aligned: bool
    phrases: list[tuple[str, float, float]]
    sentences: list[tuple[str, float, float]]
    soundtrack: bool
    loudness_lufs: float | None
    peak_db: float | None
    # Every phrase's words in order, timed (files written before word captions have none:
    # their jobs get phrase captions).
    words: list[tuple[str, float, float]] = field(default_factory=list)
    # The copy every stage shows (Copy's fields), and who wrote it: "merchant", "llm:<model>",
    # or "template" (with why) when the copywriter was asked and could not.
    copy: dict[str, str] = field(default_factory=dict)
    copy_source: str = "merchant"
    copy_note: str | None = None
    # Whether the merchant's font sets the text (decided here, where the font file is, once
    # for every format), and why not.
    font_used: bool = False
    font_note: str | None = None

    @property
    def phrase_list(self) -> list[Phrase]:
        return phrases_from_rows(self.phrases, self.words)

    @classmethod
    def load(cls, path: Path) -> NarrationInfo:
        data = read_json(path)
        for key in ("phrases", "sentences", "words"):
            data[key] = [tuple(p) for p in data.get(key, [])]
        return cls(**data)


class NarrationEngines:
    """TTS and aligners, loaded once per process on first use (they take seconds to load)."""

    def __init__(self, settings: RenderSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def voice(self, language: str) -> tuple[Synthesizer, Synthesizer | None]:
        from voice.engines.factory import build_espeak, build_fallback_tts, build_tts

        if language == "ko":
            ko = self._settings.media.korean_voice
            return self._get("tts:ko", lambda: build_espeak(ko)), None
        tts = self._get("tts:en", lambda: build_tts(self._settings))
        return tts, self._get("tts:fallback", lambda: build_fallback_tts(self._settings))

    def copywriter(self) -> Copywriter:
        writer: Copywriter = self._get("copywriter", lambda: build_copywriter(self._settings))
        return writer

    def aligner(self, language: str) -> Transcriber | None:
        if not self._settings.media.align_captions:
            return None
        from voice.engines.factory import build_asr

        s = self._settings
        if language == "ko":
            ko: Transcriber = self._get(
                "align:ko", lambda: build_asr(s, s.asr.fallback_model or "base", language="ko")
            )
            return ko
        en: Transcriber = self._get("align:en", lambda: build_asr(s, s.asr.model, language="en"))
        return en


def narrate_job(
    spec: JobSpec, paths: JobPaths, settings: RenderSettings, engines: NarrationEngines
) -> NarrationInfo:
    """Copy -> narration (TTS + caption timing) -> the job's soundtrack, mixed once."""
    if paths.narration_file.exists() and (
        paths.soundtrack.exists() or not read_json(paths.narration_file)["soundtrack"]
    ):
        return NarrationInfo.load(paths.narration_file)
    template = template_for(spec, settings)
    language = spec.resolved_language
    written = write_copy(spec, template, engines) if spec.write_copy else None
    copy = job_copy(spec, template, written)
    font = font_for(spec, copy)
    narration: Narration | None = None
    if spec.narration and copy.narration:
        synth, fallback = engines.voice(language)
        narration = narrate(
            copy.narration, synth, fallback=fallback, aligner=engines.aligner(language)
        )
    timeline = timeline_for(
        spec,
        template,
        copy,
        narration.duration if narration else 0.0,
        narration.phrases if narration else (),
    )
    report = None
    has_audio = narration is not None or spec.music
    if has_audio:
        music = None
        if spec.music and spec.music_track is not None:
            music = load_track(spec.music_track, timeline.duration)
        elif spec.music:
            music = synthesize(template.music.style, timeline.duration, sample_rate=48_000)
        mix_spec = MixSpec(
            total_s=timeline.duration,
            narration_offset_s=timeline.narration_offset_s,
            music_gain_db=template.music.gain_db,
            duck_db=template.music.duck_db,
            true_peak_db=DELIVERY_PEAK_DB - AAC_HEADROOM_DB,
        )
        spans = [
            (timeline.narration_offset_s + p.start, timeline.narration_offset_s + p.end)
            for p in (narration.sentences if narration else ())
        ]
        report = mix_for_delivery(
            lambda spec: mix(
                narration.audio if narration is not None else None,
                narration.sample_rate if narration is not None else 48_000,
                music,
                48_000,
                spec,
                paths.soundtrack,
                speech_spans=spans or None,
            ),
            mix_spec,
            encode_options(settings).audio_bitrate,
        )
    info = NarrationInfo(
        text=copy.narration if narration else "",
        language=language,
        duration_s=narration.duration if narration else 0.0,
        engine=narration.engine if narration else "none",
        aligned=narration.aligned if narration else False,
        phrases=[(p.text, p.start, p.end) for p in (narration.phrases if narration else ())],
        words=[
            (w.text, w.start, w.end)
            for p in (narration.phrases if narration else ())
            for w in p.words
        ],
        sentences=[(p.text, p.start, p.end) for p in (narration.sentences if narration else ())],
        soundtrack=has_audio,
        loudness_lufs=report.integrated_lufs if report else None,
        peak_db=report.peak_db if report else None,
        copy=copy.model_dump(),
        copy_source=written.source if written else "merchant",
        copy_note=written.reason if written else None,
        font_used=font.path is not None,
        font_note=font.note,
    )
    write_json(paths.narration_file, asdict(info))
    return info


# The true-peak ceiling of the encoded audio (feeds ask for -1 dBTP), and the headroom the
# mix leaves under it for AAC's overshoot: 0.1-0.5 dB on our soundtracks at 160 kb/s, so most
# jobs pass the first check. Each further try lowers the mix's ceiling by the overshoot seen
# (plus a margin), so the encoded audio, not only the WAV, keeps the ceiling.
DELIVERY_PEAK_DB = -1.0
AAC_HEADROOM_DB = 0.5
_OVERSHOOT_MARGIN_DB = 0.2
_PEAK_TRIES = 3


def mix_for_delivery(
    mix_with: Callable[[MixSpec], MixReport], spec: MixSpec, bitrate: str
) -> MixReport:
    """Mix, then check the true peak of the soundtrack as AAC-encoded in the outputs; over the
    ceiling, mix again under a lower one (the loudness target stays; the limiter works a
    little harder). The WAV is what every format encodes, identically."""
    report = mix_with(spec)
    ceiling = DELIVERY_PEAK_DB
    for tries in range(_PEAK_TRIES + 1):
        encoded = ffmpeg.encoded_true_peak(report.path, bitrate)
        if encoded <= ceiling:
            break
        if tries == _PEAK_TRIES:
            log.warning("soundtrack: AAC still peaks at %.2f dBTP", encoded)
            break
        log.info("soundtrack: AAC peaks at %.2f dBTP; mixing under a lower ceiling", encoded)
        lower = spec.true_peak_db - (encoded - ceiling) - _OVERSHOOT_MARGIN_DB
        spec = replace(spec, true_peak_db=lower)
        report = mix_with(spec)
    return report


def job_copy(spec: JobSpec, template: Template, written: WrittenCopy | None = None) -> Copy:
    """The job's copy: the template's, over the merchant's fields or the copywriter's draft;
    a narration script the merchant gave (a picked draft) is read as it is."""
    fields = spec.copy_fields()
    script = spec.narration_script
    if written is not None and written.draft is not None:
        d = written.draft
        fields.update(headline=d.headline, description=d.subline, cta=d.cta)
        script = d.narration
    copy = render_all_copy(template, spec.resolved_language, fields)
    return copy.model_copy(update={"narration": script}) if script else copy


def write_copy(spec: JobSpec, template: Template, engines: NarrationEngines) -> WrittenCopy:
    """Ask the copywriter for this job's copy: its best draft, or why there is none."""
    brief = Brief(
        product=spec.headline,
        language=spec.resolved_language,
        price=spec.price,
        offer=spec.offer,
        store=spec.store,
        notes=spec.description,
    )
    result = engines.copywriter().write(brief, limits_for(template, brief.language), template, n=1)
    if result.source == "template":
        log.warning("copywriter: template copy used (%s)", result.reason)
        return WrittenCopy(None, "template", result.reason)
    return WrittenCopy(result.drafts[0], result.source, None)


def saved_copy(spec: JobSpec, template: Template, info: NarrationInfo) -> Copy:
    """The copy the narrate stage used (files from before it was saved: the same rule)."""
    return Copy(**info.copy) if info.copy else job_copy(spec, template)


def timeline_for(
    spec: JobSpec,
    template: Template,
    copy: Copy,
    narration_s: float,
    phrases: Sequence[Phrase],
) -> Timeline:
    """The job's timeline: the same call when mixing the soundtrack and when rendering, so the
    audio and every format agree to the frame."""
    return plan_timeline(
        template,
        copy,
        n_images=len(spec.images),
        narration_s=narration_s,
        phrases=phrases,
        captions=spec.captions,
        caption_style=spec.caption_style or template.caption_style,
    )


# --- Stage 3: render one format ----------------------------------------------------------


def plan_for(
    spec: JobSpec, paths: JobPaths, settings: RenderSettings, aspect: Aspect, info: NarrationInfo
) -> RenderPlan:
    return _timeline_and_plan(spec, paths, settings, aspect, info)[1]


def _timeline_and_plan(
    spec: JobSpec, paths: JobPaths, settings: RenderSettings, aspect: Aspect, info: NarrationInfo
) -> tuple[Timeline, RenderPlan]:
    template = template_for(spec, settings)
    copy = saved_copy(spec, template, info)
    timeline = timeline_for(spec, template, copy, info.duration_s, info.phrase_list)
    return timeline, plan_render(
        timeline,
        template,
        aspect,
        images=spec.images,
        logo=spec.logo,
        audio=paths.soundtrack if info.soundtrack else None,
        font=spec.font if info.font_used else None,
    )


def font_for(spec: JobSpec, copy: Copy) -> FontChoice:
    """The job's font: the merchant's where it covers every text the ad draws (decided in the
    narrate stage, kept in narration.json: every format and the manifest read it there)."""
    texts = [copy.headline, copy.subline, copy.price, copy.cta, copy.store, copy.narration]
    return choose_font(spec.font, texts, house_draws=has_glyph)


def quality_file(paths: JobPaths, video: Path) -> Path:
    """Where the report of ``video`` is kept: named after it, so a report never outlives it."""
    return paths.work / f"quality-{video.stem}.json"


def check_output(
    video: Path, paths: JobPaths, settings: RenderSettings, info: NarrationInfo,
    timeline: Timeline, plan: RenderPlan,
) -> None:  # fmt: skip
    """The quality report of one rendered output (media.quality), kept beside the job's work
    for finalize to gather. Idempotent like the render itself."""
    target = quality_file(paths, video)
    if target.exists():
        return
    offset = timeline.narration_offset_s
    checks = inspect(
        video,
        plan,
        captions=timeline.captions,
        speech=(offset, offset + info.duration_s) if info.duration_s > 0 else None,
        captions_aligned=info.aligned,
        language=info.language,
        ocr=settings.media.quality_ocr,
    )
    write_json(target, [asdict(c) for c in checks])


def output_path(paths: JobPaths, aspect: Aspect, plan: RenderPlan, options: EncodeOptions) -> Path:
    digest = plan.digest() + f"-{options.preset}-{options.crf}"
    return paths.out / video_file(aspect, digest)


def encode_options(settings: RenderSettings) -> EncodeOptions:
    m = settings.media
    return EncodeOptions(crf=m.crf, preset=m.preset, oversample=m.oversample)


def render_target(spec: JobSpec, paths: JobPaths, settings: RenderSettings, aspect: Aspect) -> Path:
    """Where :func:`render_format` puts this format's video (named by its plan)."""
    info = NarrationInfo.load(paths.narration_file)
    plan = plan_for(spec, paths, settings, aspect, info)
    return output_path(paths, aspect, plan, encode_options(settings))


def render_format(
    spec: JobSpec,
    paths: JobPaths,
    settings: RenderSettings,
    aspect: Aspect,
    *,
    on_progress: Callable[[float], None] | None = None,
    should_cancel: Cancel | None = None,
) -> Path:
    info = NarrationInfo.load(paths.narration_file)
    timeline, plan = _timeline_and_plan(spec, paths, settings, aspect, info)
    options = encode_options(settings)
    out = output_path(paths, aspect, plan, options)
    render_plan(
        plan,
        out,
        asset_dir=paths.work / "layers",
        options=options,
        timeout_s=settings.media.render_timeout_s,
        on_progress=on_progress,
        should_cancel=should_cancel,
    )
    if settings.media.quality_report:
        check_output(out, paths, settings, info, timeline, plan)
    return out


# --- Stage 4: finalize ------------------------------------------------------------------


def finalize(spec: JobSpec, paths: JobPaths, settings: RenderSettings) -> Manifest:
    """Thumbnails (one per format), a short preview, and manifest.json listing everything."""
    if paths.manifest.exists():
        return Manifest.model_validate(read_json(paths.manifest))
    info = NarrationInfo.load(paths.narration_file)
    template = template_for(spec, settings)
    timeline = timeline_for(
        spec, template, saved_copy(spec, template, info), info.duration_s, info.phrase_list
    )
    options = encode_options(settings)
    outputs: list[ManifestOutput] = []
    reports: dict[str, list[QualityCheck]] = {}
    for aspect in spec.formats:
        plan = plan_for(spec, paths, settings, aspect, info)
        video = output_path(paths, aspect, plan, options)
        if not video.exists():
            raise InputError(f"format {aspect} was not rendered")  # an ordering bug, not input
        report = quality_file(paths, video)
        if report.exists():
            reports[aspect] = [QualityCheck(**c) for c in read_json(report)]
        probe = ffmpeg.probe(video)
        thumb = paths.out / thumbnail_file(aspect)
        if not thumb.exists():
            ffmpeg.thumbnail(video, thumb, at_s=_thumbnail_time(timeline))
        outputs.append(
            ManifestOutput(
                format=aspect,
                video=video.name,
                thumbnail=thumb.name,
                width=probe.width,
                height=probe.height,
                fps=probe.fps,
                duration_s=round(probe.duration, 3),
                bytes=video.stat().st_size,
            )
        )
    # A render killed mid-way (SIGKILL, power loss) leaves its unique temporary file behind;
    # every format is complete now, so whatever is still called .part is such an orphan.
    for orphan in paths.out.glob(".*.part*"):
        orphan.unlink(missing_ok=True)
    preview = paths.out / PREVIEW_FILE
    if not preview.exists():
        ffmpeg.preview(paths.out / outputs[0].video, preview)
    manifest = Manifest(
        template=spec.template,
        language=info.language,
        narration=NarrationSummary(
            text=info.text,
            engine=info.engine,
            duration_s=round(info.duration_s, 3),
            captions_aligned=info.aligned,
            loudness_lufs=info.loudness_lufs,
        ),
        duration_s=round(timeline.duration, 3),
        ad_copy=ManifestCopy(
            source=info.copy_source,
            note=info.copy_note,
            headline=timeline.copy.headline,
            subline=timeline.copy.subline,
            cta=timeline.copy.cta,
        ),
        quality=ManifestQuality(
            flagged=any(c.hard and c.status == "fail" for cs in reports.values() for c in cs),
            outputs=reports,
        )
        if reports
        else None,
        caption_style=timeline.caption_style if timeline.captions else "",
        brand=_brand_summary(spec, info),
        captions=[
            ManifestCaption(
                text=c.text,
                start=round(c.start, 3),
                end=round(c.end, 3),
                words=[(w.text, round(w.start, 3), round(w.end, 3)) for w in c.words],
            )
            for c in timeline.captions
        ],
        outputs=outputs,
        preview=preview.name,
    )
    write_json(paths.manifest, manifest.model_dump(mode="json"))
    return manifest


def _brand_summary(spec: JobSpec, info: NarrationInfo) -> ManifestBrand | None:
    if spec.font is None and spec.music_track is None:
        return None
    return ManifestBrand(
        font=spec.font is not None,
        font_used=info.font_used,
        font_note=info.font_note,
        music_track=spec.music and spec.music_track is not None,
    )


def _thumbnail_time(timeline: Timeline) -> float:
    # Once the first scene's headline has landed, before the first transition.
    first = timeline.scenes[0]
    return min((first.frames - timeline.transition_frames) / FPS - 0.1, 1.6)


# --- All stages in one process ----------------------------------------------------------


def _no_progress(stage: str, share: float) -> None:
    pass


def _stage_progress(report: Progress, stage: str) -> Callable[[float], None]:
    return lambda share: report(stage, share)


def run_job(
    spec: JobSpec,
    paths: JobPaths,
    settings: RenderSettings,
    *,
    engines: NarrationEngines | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Every stage in order, here (`castwork render`)."""
    report: Progress = progress or _no_progress
    report("prepare", 0.0)
    spec = prepare(spec, paths, settings)
    report("prepare", 1.0)
    report("narrate", 0.0)
    narrate_job(spec, paths, settings, engines or NarrationEngines(settings))
    report("narrate", 1.0)
    for aspect in spec.formats:
        stage = f"render {aspect}"
        report(stage, 0.0)
        render_format(spec, paths, settings, aspect, on_progress=_stage_progress(report, stage))
        report(stage, 1.0)
    report("finalize", 0.0)
    manifest = finalize(spec, paths, settings)
    report("finalize", 1.0)
    return manifest
