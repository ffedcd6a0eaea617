"""Render one :class:`RenderPlan` to an MP4: draw its layers to PNG, then one ffmpeg run.

The I/O shell around the pure plan and graph: texts become PNGs through Pillow
(:mod:`media.text`), the logo is fitted into its box, the end card's background is drawn,
then :func:`media.ffmpeg.render` runs the single ffmpeg process and the file appears under
its final name only when complete.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from base.files import atomic_path
from media import ffmpeg
from media.ffmpeg import CancelFn, ProgressFn
from media.graph import DEFAULT_ENCODE, EncodeOptions, Placed, build_args
from media.plan import Layer, RenderPlan
from media.templates import TextLook
from media.text import TextStyle, render_text


@dataclass(frozen=True)
class RenderResult:
    path: Path
    duration_s: float
    reused: bool  # the file was already there (a redelivered message): nothing was rendered


def text_style(look: TextLook, font: Path | None = None) -> TextStyle:
    return TextStyle(
        weight=look.weight,
        color=look.color,
        max_size=look.max_size,
        min_size=look.min_size,
        max_lines=look.max_lines,
        align=look.align,
        valign=look.valign,
        line_spacing=look.line_spacing,
        stroke=look.stroke,
        stroke_color=look.stroke_color,
        shadow=look.shadow,
        background=look.background,
        padding=look.padding,
        radius=look.radius,
        uppercase=look.uppercase,
        highlight=look.highlight,
        font=str(font) if font is not None else None,
    )


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def card_background(plan: RenderPlan, asset_dir: Path) -> Path:
    """The end card's background: a flat colour or a vertical gradient, drawn once."""
    top, bottom = plan.card_background
    key = hashlib.sha256(f"{plan.width}x{plan.height}:{top}:{bottom}".encode()).hexdigest()[:16]
    out = asset_dir / f"card-{key}.png"
    if out.exists():
        return out
    a = _hex_rgb(top)
    b = _hex_rgb(bottom or top)
    column = Image.new("RGB", (1, plan.height))
    for y in range(plan.height):
        f = y / max(1, plan.height - 1)
        column.putpixel((0, y), tuple(round(a[i] + (b[i] - a[i]) * f) for i in range(3)))
    with atomic_path(out) as tmp:
        column.resize((plan.width, plan.height)).save(tmp, format="PNG")
    return out


def _fit_logo(layer: Layer, asset_dir: Path) -> Placed:
    """Scale the logo to fit its box (keeping its shape), centred in the box."""
    assert layer.source is not None
    x, y, w, h = layer.box
    with Image.open(layer.source) as im:
        logo = im.convert("RGBA")
    scale = min(w / logo.width, h / logo.height)
    size = (max(1, round(logo.width * scale)), max(1, round(logo.height * scale)))
    digest = hashlib.sha256(f"{layer.source.name}:{size}".encode()).hexdigest()[:16]
    out = asset_dir / f"logo-{digest}.png"
    if not out.exists():
        with atomic_path(out) as tmp:
            logo.resize(size, Image.Resampling.LANCZOS).save(tmp, format="PNG")
    return Placed(layer, out, x + (w - size[0]) // 2, y + (h - size[1]) // 2, *size)


def materialize(plan: RenderPlan, asset_dir: Path) -> list[Placed]:
    """Draw every layer of the plan to a PNG (cached by content) and place it."""
    asset_dir.mkdir(parents=True, exist_ok=True)
    placed: list[Placed] = []
    for layer in plan.layers:
        if layer.kind == "logo":
            placed.append(_fit_logo(layer, asset_dir))
            continue
        assert layer.look is not None
        x, y, w, h = layer.box
        text = render_text(
            layer.text, w, h, text_style(layer.look, plan.font), asset_dir, emphasis=layer.emphasis
        )
        placed.append(Placed(layer, text.path, x + text.x, y + text.y, text.width, text.height))
    return placed


def render_plan(
    plan: RenderPlan,
    out: Path,
    *,
    asset_dir: Path,
    options: EncodeOptions = DEFAULT_ENCODE,
    timeout_s: float = 600.0,
    on_progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> RenderResult:
    """Render to ``out`` unless it already exists (outputs are named by the plan's digest)."""
    if out.exists():
        return RenderResult(out, plan.duration, reused=True)
    placed = materialize(plan, asset_dir)
    card = card_background(plan, asset_dir)
    with atomic_path(out) as tmp:
        args = build_args(plan, placed, card, tmp, options=options)
        ffmpeg.render(
            args,
            duration_s=plan.duration,
            timeout_s=timeout_s,
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
    return RenderResult(out, plan.duration, reused=False)
