"""One ffmpeg command per output: the filter graph built from a :class:`RenderPlan`.

Pure (no I/O), so the graph can be read and tested as text. Shape of the graph::

    photo_i ─ scale(cover, oversampled) ─ crop ─ zoompan(Ken Burns) ─┐
    clip_i  ─ (looped) fps ─ scale(cover) ─ crop ─ trim ─────────────┤
    card    ─ loop ──────────────────────────────────────────────────┴─ xfade ... xfade ─┐
    layer_j ─ loop(its frames) ─ setpts(its start) ─ fade(alpha) ─────── overlay ... overlay ─ x264
    soundtrack.wav ───────────────────────────────────────────────────────────────────────── aac

Nothing a merchant typed ever reaches this text: texts arrive here as PNG files (rendered by
Pillow), and every number is formatted by us. File paths go in argv (``-i path``), never into
the filter graph, and the image2 demuxer's ``%d`` pattern matching is switched off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from media import ffmpeg
from media.plan import Clip, Layer, RenderPlan

# Photos are scaled to this multiple of the frame before zoompan, whose crop offsets are whole
# pixels of its input: at 1x a slow pan visibly steps; at 1.5x the steps are 2/3 px.
DEFAULT_OVERSAMPLE = 1.5
SLIDE_FRACTION = 0.06  # how far a sliding text travels, as a share of the frame


@dataclass(frozen=True)
class Placed:
    """A layer made concrete: its PNG and where it lands (output pixels)."""

    layer: Layer
    png: Path
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class EncodeOptions:
    crf: int = 23
    preset: str = "veryfast"
    audio_bitrate: str = "160k"
    threads: int = 0  # 0: x264 picks (all cores)
    oversample: float = DEFAULT_OVERSAMPLE


DEFAULT_ENCODE = EncodeOptions()


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _num(value: float) -> str:
    # Fixed notation, no exponent: ffmpeg's expression parser reads 1e-05 fine, humans less so.
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _motion(clip: Clip) -> tuple[str, str, str]:
    """zoompan z, x, y expressions. ``on`` is the output frame number within the clip."""
    last = max(1, clip.frames - 1)
    p = f"(on/{last})"
    z = _num(clip.zoom)
    dz = _num(clip.zoom - 1.0)
    cx, cy = "(iw-iw/zoom)/2", "(ih-ih/zoom)/2"
    match clip.motion:
        case "zoom_in":
            return f"1+{dz}*{p}", cx, cy
        case "zoom_out":
            return f"{z}-{dz}*{p}", cx, cy
        case "pan_right":
            return z, f"(iw-iw/zoom)*{p}", cy
        case "pan_left":
            return z, f"(iw-iw/zoom)*(1-{p})", cy
        case "pan_down":
            return z, cx, f"(ih-ih/zoom)*{p}"
        case "pan_up":
            return z, cx, f"(ih-ih/zoom)*(1-{p})"
        case _:
            return "1", "0", "0"


def _photo_chain(idx: int, clip: Clip, plan: RenderPlan, opts: EncodeOptions) -> str:
    w2, h2 = _even(plan.width * opts.oversample), _even(plan.height * opts.oversample)
    z, x, y = _motion(clip)
    return (
        f"[{idx}:v]scale={w2}:{h2}:force_original_aspect_ratio=increase:flags=bicubic,"
        # yuv420p before zoompan: converting the one still is free, each of its frames is not.
        f"crop={w2}:{h2},setsar=1,format=yuv420p,"
        f"zoompan=z='{z}':x='{x}':y='{y}':d={clip.frames}:s={plan.width}x{plan.height}"
        f":fps={plan.fps},"
        f"settb=1/{plan.fps},setpts=N"
    )


def _video_chain(idx: int, clip: Clip, plan: RenderPlan) -> str:
    """A clip fills the frame (cover, centred), at the plan's rate; one shorter than its scene
    plays again from the start (its input loops: a held last frame would read as a freeze)."""
    w, h = plan.width, plan.height
    return (
        f"[{idx}:v]fps={plan.fps},scale={w}:{h}:force_original_aspect_ratio=increase"
        f":flags=bicubic,crop={w}:{h},setsar=1,format=yuv420p,"
        f"trim=end_frame={clip.frames},settb=1/{plan.fps},setpts=N"
    )


def _card_chain(idx: int, clip: Clip, plan: RenderPlan) -> str:
    return (
        f"[{idx}:v]scale={plan.width}:{plan.height},setsar=1,format=yuv420p,"
        f"loop=loop={clip.frames - 1}:size=1:start=0,settb=1/{plan.fps},setpts=N"
    )


def _layer_chain(idx: int, placed: Placed, plan: RenderPlan) -> str:
    layer = placed.layer
    fps = plan.fps
    first = round(layer.start * fps)
    frames = max(1, round(layer.end * fps) - first)
    parts = [
        # Converted once to the main picture's family (yuva420p): overlay then blends per frame
        # without converting the PNG again and again.
        f"[{idx}:v]format=yuva420p,loop=loop={frames - 1}:size=1:start=0,"
        f"settb=1/{fps},setpts=N+{first}"
    ]
    start = first / fps
    if layer.animation != "none" and layer.animation_s > 0:
        parts.append(f"fade=t=in:st={_num(start)}:d={_num(layer.animation_s)}:alpha=1")
    if layer.fade_out_s > 0:
        out_start = (first + frames) / fps - layer.fade_out_s
        parts.append(f"fade=t=out:st={_num(out_start)}:d={_num(layer.fade_out_s)}:alpha=1")
    return ",".join(parts)


def _overlay_xy(placed: Placed, plan: RenderPlan) -> tuple[str, str]:
    layer = placed.layer
    x, y = str(placed.x), str(placed.y)
    if layer.animation_s <= 0:
        return x, y
    start = _num(round(layer.start * plan.fps) / plan.fps)
    # Ease-out: fast at first, settling on its place; quoted so the commas stay inside.
    ease = f"pow(max(0\\,1-(t-{start})/{_num(layer.animation_s)})\\,3)"
    dx = round(plan.width * SLIDE_FRACTION)
    dy = round(plan.height * SLIDE_FRACTION * 0.6)
    match layer.animation:
        case "slide_up":
            return x, f"'{placed.y}+{dy}*{ease}'"
        case "slide_left":
            return f"'{placed.x}+{dx}*{ease}'", y
        case "slide_right":
            return f"'{placed.x}-{dx}*{ease}'", y
        case _:
            return x, y


def _transitions(plan: RenderPlan, labels: Sequence[str]) -> list[str]:
    """Cut every clip into head / body / tail and cross-fade only the overlaps.

    A chain of xfade filters over whole clips touches (copies) every frame of the video once
    per transition: 1.8 s of CPU for a 15 s 1080x1920 ad here. Cut this way, xfade sees only
    the few frames that really overlap, and concat passes the rest through untouched."""
    fps = plan.fps
    t_frames = round(plan.transition_s * fps)
    n = len(labels)
    chains: list[str] = []
    pieces: list[str] = []
    for k, (label, clip) in enumerate(zip(labels, plan.clips, strict=True)):
        has_head, has_tail = k > 0, k < n - 1
        outs = [f"[b{k}]"] + ([f"[h{k}]"] if has_head else []) + ([f"[t{k}]"] if has_tail else [])
        body_start = t_frames if has_head else 0
        body_end = clip.frames - t_frames if has_tail else clip.frames
        chains.append(f"{label}split={len(outs)}{''.join(outs)}")
        chains.append(
            f"[b{k}]trim=start_frame={body_start}:end_frame={body_end},setpts=PTS-STARTPTS[bb{k}]"
        )
        if has_head:
            chains.append(f"[h{k}]trim=end_frame={t_frames},setpts=PTS-STARTPTS[hh{k}]")
        if has_tail:
            chains.append(
                f"[t{k}]trim=start_frame={clip.frames - t_frames},setpts=PTS-STARTPTS[tt{k}]"
            )
        if has_head:
            chains.append(
                f"[tt{k - 1}][hh{k}]xfade=transition={plan.transition}"
                f":duration={_num(t_frames / fps)}:offset=0[j{k}]"
            )
            pieces.append(f"[j{k}]")
        pieces.append(f"[bb{k}]")
    chains.append(f"{''.join(pieces)}concat=n={len(pieces)}:v=1:a=0,settb=1/{fps},setpts=N[x]")
    return chains


def build_args(
    plan: RenderPlan,
    placed: Sequence[Placed],
    card_image: Path,
    out: Path,
    *,
    options: EncodeOptions = DEFAULT_ENCODE,
    progress: bool = True,
) -> list[str]:
    """The ffmpeg argv (without the binary) that renders ``plan`` into ``out``."""
    inputs: list[str] = []
    chains: list[str] = []
    clip_labels: list[str] = []
    n_inputs = 0

    def add_input(path: Path) -> int:
        nonlocal n_inputs
        # One still frame per input, read once; no %d pattern expansion in the file name.
        inputs.extend(
            ["-f", "image2", "-pattern_type", "none", "-framerate", str(plan.fps), "-i", str(path)]
        )
        n_inputs += 1
        return n_inputs - 1

    for k, clip in enumerate(plan.clips):
        if clip.kind == "photo":
            assert clip.source is not None
            chain = _photo_chain(add_input(clip.source), clip, plan, options)
        elif clip.kind == "video":
            assert clip.source is not None
            # Decoded only as far as its scene reaches; its sound is not used (muted).
            seconds = _num(clip.frames / plan.fps + 0.5)
            inputs.extend(["-stream_loop", "-1", "-t", seconds, "-i", str(clip.source)])
            n_inputs += 1
            chain = _video_chain(n_inputs - 1, clip, plan)
        else:
            chain = _card_chain(add_input(card_image), clip, plan)
        chains.append(f"{chain}[c{k}]")
        clip_labels.append(f"[c{k}]")

    if len(clip_labels) > 1 and plan.transition_s > 0:
        chains.extend(_transitions(plan, clip_labels))
        current = "[x]"
    elif len(clip_labels) > 1:
        chains.append(f"{''.join(clip_labels)}concat=n={len(clip_labels)}:v=1:a=0[x]")
        current = "[x]"
    else:
        current = clip_labels[0]

    for j, item in enumerate(placed):
        idx = add_input(item.png)
        chains.append(f"{_layer_chain(idx, item, plan)}[l{j}]")
        x, y = _overlay_xy(item, plan)
        chains.append(f"{current}[l{j}]overlay=x={x}:y={y}:eof_action=pass:format=yuv420[o{j}]")
        current = f"[o{j}]"
    chains.append(f"{current}format=yuv420p[vout]")

    audio_args: list[str] = ["-an"]
    if plan.audio is not None:
        inputs.extend(["-i", str(plan.audio)])
        audio_idx = n_inputs
        n_inputs += 1
        audio_args = ["-map", f"{audio_idx}:a", *ffmpeg.aac_args(options.audio_bitrate)]
    progress_args = ["-progress", "pipe:1", "-nostats"] if progress else []
    return [
        *progress_args,
        *inputs,
        "-filter_complex",
        ";".join(chains),
        "-map",
        "[vout]",
        *audio_args,
        "-c:v",
        "libx264",
        "-preset",
        options.preset,
        "-crf",
        str(options.crf),
        "-pix_fmt",
        "yuv420p",
        "-profile:v",
        "high",
        "-r",
        str(plan.fps),
        "-g",
        str(plan.fps * 2),
        "-threads",
        str(options.threads),
        "-t",
        _num(plan.duration),
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(out),
    ]
