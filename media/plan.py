"""The render plan: a pure function from template + job + narration timing to a timeline.

Nothing here reads files or runs anything, so every timing rule is testable in microseconds:

- The narration decides the length: speech starts ``lead_in_s`` in and ends ``tail_s`` before
  the video does, so speech never runs past the end card.
- Photo scenes share the time before the end card evenly; clips overlap by the transition.
  Times are whole frames (30 fps) so that xfade offsets never drift by a frame.
- One :class:`Timeline` serves every format; :func:`plan_render` adds the pixels of one
  aspect ratio (boxes, sizes) to make a :class:`RenderPlan` that :mod:`media.graph` turns into
  one ffmpeg command.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePath

from media.clips import is_clip
from media.errors import InputError
from media.narration import Phrase
from media.templates import (
    FRAME_SIZES,
    Animation,
    Aspect,
    CaptionStyle,
    Copy,
    Motion,
    Template,
    TextField,
    TextLook,
    TransitionKind,
)

FPS = 30
# Captions closer than this are joined end to start, so they do not blink off between phrases.
CAPTION_GAP_FILL_S = 0.35
# Pop captions: one word at a time, this much larger than the template's caption size.
POP_SCALE = 1.5


@dataclass(frozen=True)
class SceneSlot:
    """One photo scene on the timeline (frames at FPS)."""

    image: int  # index into the job's photos
    start_frame: int
    frames: int
    motion: Motion
    zoom: float
    text: tuple[TextField, ...]
    logo: bool


@dataclass(frozen=True)
class Timeline:
    """Everything about time, nothing about pixels: the same for 9:16, 1:1 and 16:9."""

    frames: int
    scenes: tuple[SceneSlot, ...]
    end_start_frame: int
    end_frames: int
    transition: TransitionKind
    transition_frames: int
    narration_offset_s: float
    narration_s: float
    captions: tuple[Phrase, ...]  # in video seconds
    copy: Copy
    caption_style: CaptionStyle = "phrase"

    @property
    def duration(self) -> float:
        return self.frames / FPS


@dataclass(frozen=True)
class Clip:
    """A video segment before transitions: a photo with motion, or the end card."""

    kind: str  # "photo" | "video" | "card"
    source: Path | None  # the photo or clip (None for the card: media.render draws it)
    start: float
    frames: int
    motion: Motion = "none"
    zoom: float = 1.0


@dataclass(frozen=True)
class Layer:
    """Something drawn over the video: a text (rendered to PNG later) or the logo."""

    name: str
    kind: str  # "text" | "logo"
    box: tuple[int, int, int, int]  # x, y, w, h in output pixels
    start: float
    end: float
    text: str = ""
    look: TextLook | None = None
    source: Path | None = None  # the logo file
    animation: Animation = "fade"
    animation_s: float = 0.4
    fade_out_s: float = 0.0
    # Karaoke: the index (in ``text.split()``) of the word drawn in the look's highlight colour.
    emphasis: int | None = None


@dataclass(frozen=True)
class RenderPlan:
    aspect: Aspect
    width: int
    height: int
    fps: int
    frames: int
    clips: tuple[Clip, ...]
    transition: TransitionKind
    transition_s: float
    layers: tuple[Layer, ...]
    card_background: tuple[str, str | None]
    audio: Path | None
    font: Path | None = None  # the merchant's font for every text layer; None: the house font
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.frames / self.fps

    def digest(self) -> str:
        """A hash of everything that decides the pixels: the name of the output file.

        Files count by name, not by where they are: a job's photos and soundtrack have
        names of their own in its folder, and that folder is a different scratch copy on
        every worker of a farm, whose renders and finalize must agree on the name."""
        blob = json.dumps(asdict(self), sort_keys=True, default=_by_name).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _by_name(value: object) -> str:
    return value.name if isinstance(value, PurePath) else str(value)


def plan_timeline(
    template: Template,
    copy: Copy,
    *,
    n_images: int,
    narration_s: float,
    phrases: Sequence[Phrase] = (),
    captions: bool = True,
    caption_style: CaptionStyle = "phrase",
) -> Timeline:
    """Lay out scenes and end card so that the narration fits, in whole frames."""
    if n_images < 1:
        raise InputError("images: at least one photo is needed", field="images")
    t = template.timing
    n = n_images
    trans_f = round(template.transition.duration_s * FPS)
    end_f = round(template.end_card.min_s * FPS)
    min_scene_f = round(t.min_scene_s * FPS)
    speech_end = (t.lead_in_s + narration_s) if narration_s > 0 else 0.0
    total_f = max(
        round((speech_end + t.tail_s) * FPS),  # the narration fits, with a tail of quiet
        n * min_scene_f + end_f,  # every photo is on screen long enough to read
    )
    if total_f > round(t.max_total_s * FPS):
        raise InputError(
            f"the narration is {narration_s:.1f} s; template {template.id!r} allows "
            f"{t.max_total_s:.0f} s in all: shorten the description or the headline",
            field="description",
        )
    # Clips overlap by one transition each: total = n*scene + end - n*trans.
    scene_f = (total_f + n * trans_f - end_f) // n
    end_f = total_f + n * trans_f - n * scene_f  # the rounding remainder goes to the end card
    scenes = []
    for i in range(n):
        spec = template.scenes[i % len(template.scenes)]
        scenes.append(
            SceneSlot(
                image=i,
                start_frame=i * (scene_f - trans_f),
                frames=scene_f,
                motion=spec.motion,
                zoom=spec.zoom,
                text=tuple(spec.text),
                logo=spec.logo,
            )
        )
    end_start = n * (scene_f - trans_f)
    return Timeline(
        frames=total_f,
        scenes=tuple(scenes),
        end_start_frame=end_start,
        end_frames=end_f,
        transition=template.transition.kind,
        transition_frames=trans_f,
        narration_offset_s=t.lead_in_s if narration_s > 0 else 0.0,
        narration_s=narration_s,
        captions=_place_captions(phrases, t.lead_in_s, total_f / FPS) if captions else (),
        copy=copy,
        caption_style=caption_style,
    )


def _place_captions(phrases: Sequence[Phrase], offset: float, total: float) -> tuple[Phrase, ...]:
    placed = [p.shifted(offset, total) for p in phrases]
    out: list[Phrase] = []
    for i, p in enumerate(placed):
        end = p.end
        if i + 1 < len(placed) and placed[i + 1].start - end < CAPTION_GAP_FILL_S:
            end = placed[i + 1].start
        out.append(Phrase(p.text, p.start, end, p.words))
    return tuple(out)


def _word_spans(phrase: Phrase) -> list[tuple[int, int, int]]:
    """(word index, first frame, end frame) of each word's turn on screen: from when it is
    spoken until the next word is (the last one until the phrase goes). Words shorter than a
    frame are skipped: no one could see them anyway."""
    n = len(phrase.words)
    bounds = [phrase.start] + [w.start for w in phrase.words[1:]] + [phrase.end]
    frames = [round(b * FPS) for b in bounds]
    return [(k, frames[k], frames[k + 1]) for k in range(n) if frames[k + 1] > frames[k]]


def caption_layers(
    timeline: Timeline, look: TextLook, box_for: dict[bool, tuple[int, int, int, int]]
) -> list[Layer]:
    """The caption layers of one format in the timeline's style. ``box_for[True]`` is the end
    card's caption box, ``box_for[False]`` the scenes'. Word styles need word times; a phrase
    without them is shown whole."""
    card_start = timeline.end_start_frame / FPS
    layers: list[Layer] = []
    for j, phrase in enumerate(timeline.captions):
        box = box_for[phrase.start >= card_start]
        style = timeline.caption_style
        shown: list[tuple[str, float, float, str, int | None]]  # name, start, end, text, emphasis
        if style == "phrase" or len(phrase.words) != len(phrase.text.split()):
            shown_look = look
            shown = [(f"caption@{j}", phrase.start, phrase.end, phrase.text, None)]
        elif style == "karaoke":
            shown_look = look
            shown = [
                (f"caption@{j}.{k}", a / FPS, b / FPS, phrase.text, k)
                for k, a, b in _word_spans(phrase)
            ]
        else:
            # A word alone is shown larger (it still shrinks to fit the caption box).
            shown_look = look.model_copy(
                update={"max_size": min(400, round(look.max_size * POP_SCALE))}
            )
            shown = [
                (f"caption@{j}.{k}", a / FPS, b / FPS, phrase.words[k].text, None)
                for k, a, b in _word_spans(phrase)
            ]
        for name, start, end, text, emphasis in shown:
            layers.append(
                Layer(
                    name=name,
                    kind="text",
                    box=box,
                    start=start,
                    end=end,
                    text=text,
                    look=shown_look,
                    animation="none",
                    animation_s=0.0,
                    emphasis=emphasis,
                )
            )
    return layers


def _text_layer(
    copy: Copy,
    field: TextField,
    name: str,
    box: tuple[int, int, int, int],
    look: TextLook,
    start: float,
    end: float,
    fade_out_s: float,
) -> list[Layer]:
    """The layer for one copy field, or none when the merchant left that field empty."""
    text: str = getattr(copy, field)
    if not text:
        return []
    return [
        Layer(
            name=name,
            kind="text",
            box=box,
            start=start,
            end=end,
            text=text,
            look=look,
            animation=look.animation,
            animation_s=look.animation_s,
            fade_out_s=fade_out_s,
        )
    ]


def plan_render(
    timeline: Timeline,
    template: Template,
    aspect: Aspect,
    *,
    images: Sequence[Path],
    logo: Path | None,
    audio: Path | None,
    font: Path | None = None,
) -> RenderPlan:
    """Pixels for one aspect ratio: clips, and every overlay with its box and time."""
    width, height = FRAME_SIZES[aspect]
    layout = template.layouts[aspect]
    trans_s = timeline.transition_frames / FPS
    clips: list[Clip] = []
    layers: list[Layer] = []
    for k, scene in enumerate(timeline.scenes):
        start = scene.start_frame / FPS
        end = (scene.start_frame + scene.frames) / FPS
        source = images[scene.image]
        if is_clip(source):  # a video clip plays as it is: no Ken Burns motion over it
            clips.append(Clip("video", source, start, scene.frames))
        else:
            clips.append(Clip("photo", source, start, scene.frames, scene.motion, scene.zoom))
        # Texts leave with their photo: they fade out during the transition to the next clip.
        for name in scene.text:
            box = layout.scene[name].pixels(width, height)
            look = template.styles[name]
            layers += _text_layer(
                timeline.copy, name, f"{name}@{k}", box, look, start + look.delay_s, end, trans_s
            )
        if scene.logo and logo is not None:
            layers.append(
                Layer(
                    name=f"logo@{k}",
                    kind="logo",
                    box=layout.scene["logo"].pixels(width, height),
                    start=start,
                    end=end,
                    source=logo,
                    animation="fade",
                    animation_s=0.3,
                    fade_out_s=trans_s,
                )
            )
    card_start = timeline.end_start_frame / FPS
    clips.append(Clip("card", None, card_start, timeline.end_frames))
    total = timeline.duration
    card = template.end_card
    for i, name in enumerate(card.text):
        box = layout.end_card[name].pixels(width, height)
        # Staggered entry once the transition has landed: a beat per line.
        start = card_start + trans_s + 0.12 * i
        layers += _text_layer(
            timeline.copy, name, f"{name}@end", box, template.styles[name], start, total, 0.0
        )
    if card.logo and logo is not None:
        layers.append(
            Layer(
                name="logo@end",
                kind="logo",
                box=layout.end_card["logo"].pixels(width, height),
                start=card_start + trans_s * 0.5,
                end=total,
                source=logo,
                animation="fade",
                animation_s=0.4,
            )
        )
    caption_look = template.styles.get("captions")
    if caption_look is not None:
        boxes = {
            True: layout.end_card["captions"].pixels(width, height),
            False: layout.scene["captions"].pixels(width, height),
        }
        layers += caption_layers(timeline, caption_look, boxes)
    return RenderPlan(
        aspect=aspect,
        width=width,
        height=height,
        fps=FPS,
        frames=timeline.frames,
        clips=tuple(clips),
        transition=timeline.transition,
        transition_s=trans_s,
        layers=tuple(layers),
        card_background=(card.background, card.background_to),
        audio=audio,
        font=font,
    )
