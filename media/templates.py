"""Ad templates: a declarative YAML format, validated by pydantic, with sandboxed Jinja2 copy.

A template is data (``templates/*.yaml``). It says what an ad looks like in every format:
the photo scenes with their motion, the text layers (headline, price, call to action...) with
their boxes per aspect ratio and entry animation, the transition, the end card, the music, and
the **copy**: Jinja2 templates (per language) that turn a merchant's fields into the narration
script and the on-screen text. Nothing here touches ffmpeg; :mod:`media.plan` turns a template
and a job into a timeline.

Copy templates run in Jinja2's immutable sandbox with ``StrictUndefined``: a merchant's text is
data, never code, and a template that names a field that does not exist fails when loaded
(rendered once with sample fields), not in the middle of a job.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import jinja2
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from media.errors import InputError, TemplateError, first_error

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

Aspect = Literal["9:16", "1:1", "16:9"]
ASPECTS: tuple[Aspect, ...] = ("9:16", "1:1", "16:9")
# All three share a 1080 px short side, so text sizes in templates are plain pixels.
FRAME_SIZES: dict[Aspect, tuple[int, int]] = {
    "9:16": (1080, 1920),
    "1:1": (1080, 1080),
    "16:9": (1920, 1080),
}
TextField = Literal["headline", "subline", "price", "cta", "store"]
TEXT_FIELDS: tuple[TextField, ...] = ("headline", "subline", "price", "cta", "store")
Language = Literal["en", "ko"]
Motion = Literal["zoom_in", "zoom_out", "pan_left", "pan_right", "pan_up", "pan_down", "none"]
Animation = Literal["none", "fade", "slide_up", "slide_left", "slide_right"]
# xfade transitions that read well at ad pace (ffmpeg names).
TransitionKind = Literal[
    "fade", "dissolve", "wipeleft", "wipeup", "slideleft", "slideup", "smoothleft", "smoothup",
    "circleopen", "radial", "zoomin", "fadeblack",
]  # fmt: skip
MusicStyle = Literal["bright", "pulse", "calm"]
# How narration captions appear: a phrase at a time; the phrase with the spoken word in the
# highlight colour (karaoke); or one word at a time (pop).
CaptionStyle = Literal["phrase", "karaoke", "pop"]
CAPTION_STYLES: tuple[CaptionStyle, ...] = ("phrase", "karaoke", "pop")

_COLOR = r"^#[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?$"
Color = Annotated[str, Field(pattern=_COLOR)]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Box(_Model):
    """A rectangle in fractions of the frame (0..1), so one layout fits any resolution."""

    x: Unit
    y: Unit
    w: Annotated[float, Field(gt=0.0, le=1.0)]
    h: Annotated[float, Field(gt=0.0, le=1.0)]

    @model_validator(mode="after")
    def _inside(self) -> Box:
        if self.x + self.w > 1.0001 or self.y + self.h > 1.0001:
            raise ValueError("box must lie inside the frame (x + w <= 1 and y + h <= 1)")
        return self

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        return (
            round(self.x * width),
            round(self.y * height),
            max(1, round(self.w * width)),
            max(1, round(self.h * height)),
        )


class TextLook(_Model):
    """How one text field looks and enters (the render side is media.text.TextStyle)."""

    weight: Literal["regular", "bold", "black"] = "bold"
    color: Color = "#FFFFFF"
    max_size: Annotated[int, Field(ge=8, le=400)] = 96
    min_size: Annotated[int, Field(ge=8, le=400)] = 28
    max_lines: Annotated[int, Field(ge=1, le=8)] = 3
    align: Literal["left", "center", "right"] = "center"
    valign: Literal["top", "middle", "bottom"] = "middle"
    line_spacing: Annotated[float, Field(ge=0.8, le=3.0)] = 1.15
    stroke: Annotated[int, Field(ge=0, le=20)] = 0
    stroke_color: Color = "#000000"
    shadow: bool = False
    background: Color | None = None
    padding: Annotated[int, Field(ge=0, le=200)] = 0
    radius: Annotated[int, Field(ge=0, le=200)] = 0
    uppercase: bool = False
    # The spoken word's colour in karaoke captions (other fields ignore it).
    highlight: Color = "#FFD60A"
    animation: Animation = "fade"
    animation_s: Annotated[float, Field(ge=0.0, le=3.0)] = 0.45
    delay_s: Annotated[float, Field(ge=0.0, le=5.0)] = 0.15

    @model_validator(mode="after")
    def _sizes(self) -> TextLook:
        if self.min_size > self.max_size:
            raise ValueError("min_size must not exceed max_size")
        return self


class Scene(_Model):
    """One photo scene; photos are assigned to scenes in order (the list is cycled)."""

    motion: Motion = "zoom_in"
    zoom: Annotated[float, Field(ge=1.0, le=1.6)] = 1.15
    text: list[TextField] = []
    logo: bool = False


class EndCard(_Model):
    background: Color = "#111111"
    # A second colour makes a vertical gradient.
    background_to: Color | None = None
    text: list[TextField] = ["headline", "price", "cta"]
    logo: bool = True
    min_s: Annotated[float, Field(ge=1.0, le=10.0)] = 2.5


class Layout(_Model):
    """Where things go in one aspect ratio: boxes for scenes and for the end card."""

    scene: dict[TextField | Literal["logo", "captions"], Box]
    end_card: dict[TextField | Literal["logo", "captions"], Box]


class Transition(_Model):
    kind: TransitionKind = "fade"
    duration_s: Annotated[float, Field(ge=0.0, le=2.0)] = 0.5


class Music(_Model):
    style: MusicStyle = "bright"
    gain_db: Annotated[float, Field(ge=-40.0, le=0.0)] = -16.0
    duck_db: Annotated[float, Field(ge=-40.0, le=0.0)] = -10.0


class Timing(_Model):
    lead_in_s: Annotated[float, Field(ge=0.0, le=5.0)] = 0.5
    tail_s: Annotated[float, Field(ge=0.2, le=5.0)] = 0.6
    min_scene_s: Annotated[float, Field(ge=1.0, le=20.0)] = 2.0
    max_total_s: Annotated[float, Field(ge=5.0, le=120.0)] = 60.0


class Copy(_Model):
    """Jinja2 templates (sandboxed) over the job's fields, one set per language."""

    narration: str
    headline: str = "{{ headline }}"
    subline: str = "{{ description or '' }}"
    price: str = "{{ price or '' }}"
    cta: str = "{{ cta }}"
    store: str = "{{ store or '' }}"


class Template(_Model):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
    name: str
    description: str = ""
    copy_: Annotated[dict[Language, Copy], Field(alias="copy")]
    styles: dict[TextField | Literal["captions"], TextLook]
    scenes: Annotated[list[Scene], Field(min_length=1, max_length=12)]
    end_card: EndCard = EndCard()
    layouts: dict[Aspect, Layout]
    transition: Transition = Transition()
    music: Music = Music()
    timing: Timing = Timing()
    background: Color = "#000000"
    caption_style: CaptionStyle = "phrase"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("copy_")
    @classmethod
    def _english_first(cls, v: dict[Language, Copy]) -> dict[Language, Copy]:
        if "en" not in v:
            raise ValueError("copy must have an 'en' entry (the fallback language)")
        return v

    @model_validator(mode="after")
    def _complete(self) -> Template:
        used: set[str] = {f for s in self.scenes for f in s.text} | set(self.end_card.text)
        for field in sorted(used):
            if field not in self.styles:
                raise ValueError(f"styles.{field}: missing (the field is shown by a scene)")
        for aspect in ASPECTS:
            layout = self.layouts.get(aspect)
            if layout is None:
                raise ValueError(f"layouts.{aspect}: missing (every template renders all formats)")
            for field in sorted({f for s in self.scenes for f in s.text} | {"captions"}):
                if field not in layout.scene:
                    raise ValueError(f"layouts.{aspect}.scene.{field}: missing box")
            if any(s.logo for s in self.scenes) and "logo" not in layout.scene:
                raise ValueError(f"layouts.{aspect}.scene.logo: missing box")
            for field in sorted(set(self.end_card.text) | {"captions"}):
                if field not in layout.end_card:
                    raise ValueError(f"layouts.{aspect}.end_card.{field}: missing box")
            if self.end_card.logo and "logo" not in layout.end_card:
                raise ValueError(f"layouts.{aspect}.end_card.logo: missing box")
        return self

    def copy_for(self, language: Language) -> Copy:
        return self.copy_.get(language) or self.copy_["en"]


# --- Copy: Jinja2 in the sandbox --------------------------------------------------------

_SAMPLE_FIELDS: dict[str, Any] = {
    "headline": "Sample headline",
    "description": "A sample description",
    "price": "$9.99",
    "cta": "Shop now",
    "store": "Sample Store",
    "language": "en",
}


@lru_cache(maxsize=1)
def _jinja() -> ImmutableSandboxedEnvironment:
    # No autoescape: the output is speech and pixels, not HTML; the sandbox is what protects us.
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
    )
    env.filters["sentence"] = sentence
    return env


def sentence(value: object) -> str:
    """``{{ headline | sentence }}``: end with punctuation so TTS pauses, never doubled."""
    text = str(value or "").strip()
    if not text or text[-1] in ".!?…。！？":
        return text
    return text + "."


def render_copy(source: str, fields: dict[str, Any], *, where: str) -> str:
    """Render one copy template; whitespace collapsed (newlines in YAML are layout, not text)."""
    try:
        text = _jinja().from_string(source).render(**fields)
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{where}: {exc}") from exc
    # Line breaks in YAML block scalars are layout, not text; the renderer wraps by itself.
    return re.sub(r"\s+", " ", text).strip()


def render_all_copy(template: Template, language: Language, fields: dict[str, Any]) -> Copy:
    """Every copy field rendered for one job."""
    copy = template.copy_for(language)
    rendered: dict[str, str] = {}
    for name in ("narration", *TEXT_FIELDS):
        src: str = getattr(copy, name)
        rendered[name] = render_copy(src, fields, where=f"template {template.id}: copy.{name}")
    return Copy(**rendered)


# --- Loading ----------------------------------------------------------------------------


def load_template_file(path: Path) -> Template:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"{path.name}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise TemplateError(f"{path.name}: a template is a YAML mapping")
    try:
        template = Template.model_validate(data)
    except ValidationError as exc:
        loc, message = first_error(exc, default="template")
        raise TemplateError(f"{path.name}: {loc}: {message}") from None
    if template.id != path.stem:
        raise TemplateError(f"{path.name}: id {template.id!r} must match the file name")
    # Render every copy template once now, so a typo fails at load time, not in a job.
    for language in template.copy_:
        render_all_copy(template, language, _SAMPLE_FIELDS)
    return template


def load_templates(directory: Path = TEMPLATES_DIR) -> dict[str, Template]:
    templates = {}
    for path in sorted(directory.glob("*.yaml")):
        template = load_template_file(path)
        templates[template.id] = template
    return templates


@lru_cache(maxsize=8)
def _bundled() -> dict[str, Template]:
    return load_templates(TEMPLATES_DIR)


def catalogue(extra_dir: Path | None = None) -> dict[str, Template]:
    """The templates a job can name: the bundled ones, and those of ``extra_dir``
    (``media.templates_dir``; the same id there wins). The one place templates are looked up."""
    templates = dict(_bundled())
    if extra_dir is not None and extra_dir.is_dir():
        templates.update(load_templates(extra_dir))
    return templates


def get_template(template_id: str, extra_dir: Path | None = None) -> Template:
    """One template of :func:`catalogue`; an unknown id is an :class:`InputError` naming the
    known ones."""
    templates = catalogue(extra_dir)
    try:
        return templates[template_id]
    except KeyError:
        known = ", ".join(sorted(templates)) or "none"
        raise InputError(
            f"template: unknown template {template_id!r} (known: {known})", field="template"
        ) from None
