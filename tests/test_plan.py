"""The pure plan and filter graph: timing rules, whole frames, no merchant text in the graph."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.errors import InputError
from media.graph import EncodeOptions, Placed, build_args
from media.narration import Phrase, Word
from media.plan import FPS, Layer, Timeline, plan_render, plan_timeline
from media.templates import ASPECTS, FRAME_SIZES, CaptionStyle, get_template, render_all_copy

FIELDS = {
    "headline": "Summer sale",
    "description": "Linen shirts",
    "price": "$29",
    "cta": "Shop now",
    "store": "Acme",
    "language": "en",
}


def _timeline(template_id: str = "showcase", n: int = 3, speech: float = 8.0) -> Timeline:
    t = get_template(template_id)
    phrases = [Phrase(f"p{i}", i * 1.0, i * 1.0 + 0.8) for i in range(int(speech))]
    return plan_timeline(
        t, render_all_copy(t, "en", FIELDS), n_images=n, narration_s=speech, phrases=phrases
    )


@settings(max_examples=200, deadline=None)
@given(
    template_id=st.sampled_from(["showcase", "sale", "news"]),
    n=st.integers(1, 8),
    speech=st.floats(0.0, 40.0),
)
def test_timeline_rules(template_id: str, n: int, speech: float) -> None:
    t = get_template(template_id)
    tl = _timeline(template_id, n, speech)
    trans = tl.transition_frames
    # Clips tile the video exactly, overlapping by one transition each.
    for a, b in zip(tl.scenes, tl.scenes[1:], strict=False):
        assert b.start_frame == a.start_frame + a.frames - trans
    assert tl.end_start_frame == tl.scenes[-1].start_frame + tl.scenes[-1].frames - trans
    assert tl.end_start_frame + tl.end_frames == tl.frames
    # Speech never runs past the end: lead-in + narration + tail fits.
    if speech > 0:
        assert tl.narration_offset_s + speech + t.timing.tail_s <= tl.duration + 1 / FPS
    # Every photo and the end card stay long enough to read.
    assert all(s.frames - trans >= round(t.timing.min_scene_s * FPS) - 1 for s in tl.scenes)
    assert tl.end_frames >= round(t.end_card.min_s * FPS)
    # Captions never overlap and stay inside the video.
    for a, b in zip(tl.captions, tl.captions[1:], strict=False):
        assert a.end <= b.start + 1e-9
    assert all(0 <= c.start < c.end <= tl.duration + 1e-9 for c in tl.captions)


def test_photos_cycle_through_scene_specs() -> None:
    t = get_template("showcase")
    tl = _timeline(n=5)
    assert [s.motion for s in tl.scenes] == [t.scenes[i % 3].motion for i in range(5)]
    assert [s.image for s in tl.scenes] == [0, 1, 2, 3, 4]


def test_narration_too_long_is_a_clear_input_error() -> None:
    with pytest.raises(InputError, match=r"narration is 90.0 s.*shorten"):
        _timeline(speech=90.0)


def test_no_narration_still_makes_an_ad() -> None:
    tl = _timeline(speech=0.0)
    assert tl.captions == () and tl.narration_offset_s == 0.0
    assert tl.duration >= 3 * 2.2 + 2.8 - 0.1


@pytest.mark.parametrize("aspect", ASPECTS)
def test_render_plan_places_every_layer_inside_the_frame(aspect: str) -> None:
    t = get_template("sale")
    tl = _timeline("sale", 3)
    images = [Path(f"/in/{i}.jpg") for i in range(3)]
    plan = plan_render(tl, t, aspect, images=images, logo=Path("/in/logo.png"), audio=None)  # type: ignore[arg-type]
    w, h = FRAME_SIZES[aspect]  # type: ignore[index]
    assert (plan.width, plan.height, plan.fps, plan.frames) == (w, h, FPS, tl.frames)
    names = {layer.name.split("@")[0] for layer in plan.layers}
    assert {"headline", "price", "cta", "store", "logo", "caption"} <= names
    for layer in plan.layers:
        x, y, bw, bh = layer.box
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h, layer.name
        assert 0 <= layer.start < layer.end <= tl.duration + 1e-9, layer.name
    end_texts = [layer for layer in plan.layers if layer.name.endswith("@end")]
    assert all(layer.start >= tl.end_start_frame / FPS for layer in end_texts)
    # The digest names the output: it changes with the pixels and only with them.
    again = plan_render(tl, t, aspect, images=images, logo=Path("/in/logo.png"), audio=None)  # type: ignore[arg-type]
    assert plan.digest() == again.digest()
    other = plan_render(tl, t, aspect, images=images[::-1], logo=None, audio=None)  # type: ignore[arg-type]
    assert other.digest() != plan.digest()
    # The same job in another folder (a farm worker's scratch copy) names the same output.
    moved = [Path("/scratch/job-x/in") / p.name for p in images]
    elsewhere = plan_render(tl, t, aspect, images=moved, logo=Path("/x/logo.png"), audio=None)  # type: ignore[arg-type]
    assert elsewhere.digest() == plan.digest()


@pytest.mark.reliability(
    "input", "copy text and file names with ffmpeg filter syntax: kept out of the filter graph"
)
def test_graph_keeps_merchant_text_and_paths_out_of_the_filter() -> None:
    t = get_template("showcase")
    nasty = {**FIELDS, "headline": "50% off'; drawtext=text=pwn:[out]", "store": "a,b;c"}
    tl = plan_timeline(t, render_all_copy(t, "en", nasty), n_images=2, narration_s=5.0)
    images = [Path("/in/%d x';[a].jpg"), Path("/in/b.jpg")]
    plan = plan_render(tl, t, "9:16", images=images, logo=None, audio=Path("/w/s.wav"))
    placed = [
        Placed(layer, Path(f"/w/layer{i}.png"), layer.box[0], layer.box[1], 10, 10)
        for i, layer in enumerate(plan.layers)
    ]
    args = build_args(
        plan, placed, Path("/w/card.png"), Path("/o/out.mp4"), options=EncodeOptions()
    )
    graph = args[args.index("-filter_complex") + 1]
    assert "pwn" not in graph and "drawtext" not in graph and "/in/" not in graph
    # Paths travel as argv items after -i, with image2's %d pattern matching off.
    assert args[args.index(str(images[0])) - 1] == "-i"
    assert args.count("-pattern_type") == len(plan.clips) + len(placed)
    assert graph.count("overlay=") == len(placed)
    assert graph.count("zoompan=") == 2 and graph.count("xfade=") == 2
    assert args[args.index("-crf") + 1] == "23" and "+faststart" in args


def _worded(text: str, start: float, step: float) -> Phrase:
    words = text.split()
    timed = tuple(Word(w, start + i * step, start + (i + 0.8) * step) for i, w in enumerate(words))
    return Phrase(text, start, start + len(words) * step, timed)


def _caption_layers(style: CaptionStyle, phrases: list[Phrase]) -> list[Layer]:
    t = get_template("showcase")
    tl = plan_timeline(
        t,
        render_all_copy(t, "en", FIELDS),
        n_images=2,
        narration_s=6.0,
        phrases=phrases,
        caption_style=style,
    )
    plan = plan_render(
        tl, t, "9:16", images=[Path("/a.jpg"), Path("/b.jpg")], logo=None, audio=None
    )
    return [layer for layer in plan.layers if layer.name.startswith("caption")]


def test_karaoke_lights_each_word_from_when_it_is_spoken() -> None:
    lead = get_template("showcase").timing.lead_in_s
    phrases = [_worded("Fresh coffee every morning", 0.0, 0.3), _worded("Shop now", 2.0, 0.4)]
    layers = _caption_layers("karaoke", phrases)
    assert [(la.text, la.emphasis) for la in layers] == [
        ("Fresh coffee every morning", 0), ("Fresh coffee every morning", 1),
        ("Fresh coffee every morning", 2), ("Fresh coffee every morning", 3),
        ("Shop now", 0), ("Shop now", 1),
    ]  # fmt: skip
    # Word k is lit from its start (whole frames) until word k+1 starts: no gap, no overlap.
    first = layers[:4]
    assert [round(la.start * FPS) for la in first] == [
        round((lead + k * 0.3) * FPS) for k in range(4)
    ]
    for a, b in itertools.pairwise(first):
        assert a.end == b.start
    # The last word stays lit until the phrase leaves (gaps under 0.35 s are bridged).
    assert layers[3].end == pytest.approx(round((lead + 1.2) * FPS) / FPS)


def test_pop_shows_one_word_at_a_time_and_phrase_shows_the_phrase() -> None:
    phrases = [_worded("Fresh coffee every morning", 0.0, 0.3)]
    pop = _caption_layers("pop", phrases)
    assert [la.text for la in pop] == ["Fresh", "coffee", "every", "morning"]
    assert all(la.emphasis is None for la in pop)
    (whole,) = _caption_layers("phrase", phrases)
    assert whole.text == "Fresh coffee every morning" and whole.emphasis is None
    # Without word times (a job narrated before them) word styles show the phrase whole.
    (fallback,) = _caption_layers("karaoke", [Phrase("Fresh coffee", 0.0, 1.0)])
    assert fallback.text == "Fresh coffee" and fallback.emphasis is None


@settings(max_examples=100, deadline=None)
@given(
    style=st.sampled_from(["karaoke", "pop"]),
    gaps=st.lists(st.floats(0.0, 0.6), min_size=1, max_size=8),
)
def test_word_captions_never_overlap_and_stay_in_the_video(
    style: CaptionStyle, gaps: list[float]
) -> None:
    # Word times as an aligner may give them: uneven, some shorter than a frame.
    at, words = 0.0, []
    for i, gap in enumerate(gaps):
        words.append(Word(f"w{i}", at, at + gap))
        at += gap
    phrase = Phrase(" ".join(w.text for w in words), 0.0, max(at, 0.2), tuple(words))
    layers = _caption_layers(style, [phrase])
    frames = [(round(la.start * FPS), round(la.end * FPS)) for la in layers]
    assert all(a < b for a, b in frames)  # every layer at least a frame long
    assert all(b1 <= a2 for (_, b1), (a2, _) in itertools.pairwise(frames))
