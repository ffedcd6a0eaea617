"""Ad-video render speed: Castwork's single ffmpeg graph against a plain MoviePy script.

Both render the same 15 s 1080x1920 30 fps spec of the "showcase" template: four real photos
(scikit-image's bundled astronaut, coffee, chelsea and rocket, saved as ~1600 px JPEGs), a logo,
the template's copy (headline, price, call to action, description, store), captions timed over
a 13.8 s script, Ken Burns motion, 0.5 s cross-fades, an end card and a real 15 s soundtrack
(the template's music through the job's mixer). The MoviePy side is what a developer would
write with MoviePy 2.x: an ImageClip per photo zoomed by a ``resized(lambda t: ...)``,
``vfx.CrossFadeIn`` transitions in a CompositeVideoClip, the very PNGs Castwork drew for the
texts (so text rendering is not the difference) at the same places and times, a ColorClip end
card, and ``write_videofile(..., preset=<same>, ffmpeg_params=["-crf", <same>], threads=2)``.

Each render runs in its own process, so its peak memory is its own: the RSS of the whole
process tree (Python and its ffmpeg children), summed and sampled from /proc every 50 ms, and
the exact per-process peaks (``getrusage``); psutil is not needed (nor installed) for that.
CPU seconds are split between Python and ffmpeg, and what other processes used meanwhile is
printed (/proc/stat), because this is often a shared machine. The clock covers the render
only (Castwork: text PNGs + ffmpeg; MoviePy: building the clips + write_videofile), not making
the photos.

    .venv/bin/python bench/render.py [--repeat 3] [--preset superfast] [--crf 23]
        [--skip-moviepy] [--moviepy-ffmpeg bundled|system] [--out DIR] [--json PATH]

Targets (2 cores): Castwork <= 0.5x real time, >= 10x faster than MoviePy, <= 600 MB peak.
The exit status is 0 when every render worked, targets met or not (PASS/MISS is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

# Only what a render needs is imported at the top: each worker process's memory is measured.
from media import ffmpeg
from media.graph import SLIDE_FRACTION, EncodeOptions, Placed
from media.narration import (
    SENTENCE_PAUSE_S,
    Phrase,
    Word,
    caption_groups,
    phrases_from_rows,
    split_sentences,
)
from media.plan import Clip, RenderPlan, plan_render, plan_timeline
from media.render import card_background, materialize
from media.templates import CAPTION_STYLES, Aspect, CaptionStyle, get_template, render_all_copy

TEMPLATE = "showcase"
ASPECT: Aspect = "9:16"
DURATION_S = 15.0
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # bundled in the scikit-image wheel
PHOTO_SIDE = 1600
FIELDS = {
    "headline": "Hand-thrown ceramic pour-over set",
    "description": "Slow coffee, glazed by hand in small batches",
    "price": "$48",
    "cta": "Shop now",
    "store": "Kiln & Co.",
    "language": "en",
}
MOVIEPY_THREADS = 2
SAMPLE_S = 0.05
TARGET_RTF = 0.5
TARGET_RATIO = 10.0
TARGET_PEAK_MB = 600.0

T = TypeVar("T")


# --- The spec: made once, read by both renderers ---------------------------------------------


@dataclass(frozen=True)
class Spec:
    photos: list[str]
    logo: str
    soundtrack: str
    narration_s: float
    phrases: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]

    @classmethod
    def load(cls, directory: Path) -> Spec:
        data = json.loads((directory / "spec.json").read_text())
        data["phrases"] = [tuple(p) for p in data["phrases"]]
        data["words"] = [tuple(p) for p in data["words"]]
        return cls(**data)


def caption_phrases(text: str, seconds: float) -> list[Phrase]:
    """Captions as the narrator would time them without an aligner: by character count."""
    sentences = split_sentences(text)
    speaking = seconds - SENTENCE_PAUSE_S * (len(sentences) - 1)
    chars = sum(len(s) for s in sentences)
    phrases: list[Phrase] = []
    at = 0.0
    for sentence in sentences:
        length = speaking * len(sentence) / chars
        words = sentence.split()
        edges = np.concatenate([[0.0], np.cumsum([len(w) + 1 for w in words])])
        edges = at + length * edges / edges[-1]
        for a, b in caption_groups(words):
            timed = tuple(Word(words[i], float(edges[i]), float(edges[i + 1])) for i in range(a, b))
            phrases.append(Phrase(" ".join(words[a:b]), float(edges[a]), float(edges[b]), timed))
        at += length + SENTENCE_PAUSE_S
    return phrases


def make_spec(directory: Path) -> Spec:
    """Photos, logo and a mixed 15 s soundtrack on disk; the timing that makes 15.0 s."""
    import skimage.data
    from PIL import Image

    from media.music import synthesize
    from media.soundtrack import MixSpec, mix

    directory.mkdir(parents=True, exist_ok=True)
    photos = []
    for name in PHOTOS:
        im = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        scale = PHOTO_SIDE / max(im.size)
        im = im.resize(
            (round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS
        )
        path = directory / f"{name}.jpg"
        im.save(path, format="JPEG", quality=92)
        photos.append(str(path))
    logo = directory / "logo.png"
    pixels = skimage.data.logo()  # type: ignore[no-untyped-call]
    Image.fromarray(pixels).save(logo, format="PNG")

    template = get_template(TEMPLATE)
    timing = template.timing
    narration_s = DURATION_S - timing.lead_in_s - timing.tail_s
    copy = render_all_copy(template, "en", FIELDS)
    phrases = caption_phrases(copy.narration, narration_s)
    soundtrack = directory / "soundtrack.wav"
    music = synthesize(template.music.style, DURATION_S, sample_rate=48_000)
    spec = MixSpec(
        total_s=DURATION_S,
        narration_offset_s=timing.lead_in_s,
        music_gain_db=template.music.gain_db,
        duck_db=template.music.duck_db,
    )
    mix(None, 48_000, music, 48_000, spec, soundtrack)
    result = Spec(
        photos=photos,
        logo=str(logo),
        soundtrack=str(soundtrack),
        narration_s=narration_s,
        phrases=[(p.text, p.start, p.end) for p in phrases],
        words=[(w.text, w.start, w.end) for p in phrases for w in p.words],
    )
    (directory / "spec.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def build_plan(spec: Spec, captions: CaptionStyle | None = None) -> RenderPlan:
    """The one RenderPlan both renderers draw (pure: the same in every process); captions in
    the template's style unless another is named."""
    template = get_template(TEMPLATE)
    copy = render_all_copy(template, "en", FIELDS)
    timeline = plan_timeline(
        template,
        copy,
        n_images=len(spec.photos),
        narration_s=spec.narration_s,
        phrases=phrases_from_rows(spec.phrases, spec.words),
        caption_style=captions or template.caption_style,
    )
    plan = plan_render(
        timeline,
        template,
        ASPECT,
        images=[Path(p) for p in spec.photos],
        logo=Path(spec.logo),
        audio=Path(spec.soundtrack),
    )
    if abs(plan.duration - DURATION_S) > 1e-9:
        raise SystemExit(f"the plan is {plan.duration} s, not {DURATION_S} s")
    return plan


# --- Workers: one render per process --------------------------------------------------------


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _usage() -> tuple[resource.struct_rusage, resource.struct_rusage]:
    return resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)


def _usage_figures(
    before: tuple[resource.struct_rusage, resource.struct_rusage],
) -> dict[str, float]:
    """CPU seconds since ``before`` of this process and of its (reaped) children, all ffmpeg,
    and the peak RSS of this process and of its largest child (ru_maxrss: kB on Linux)."""
    own, kids = _usage()
    return {
        "python_cpu_s": _cpu(own) - _cpu(before[0]),
        "ffmpeg_cpu_s": _cpu(kids) - _cpu(before[1]),
        "python_maxrss_mb": own.ru_maxrss / 1024,
        "ffmpeg_maxrss_mb": kids.ru_maxrss / 1024,
    }


def _timed(fn: Callable[..., T], into: dict[str, float], key: str) -> Callable[..., T]:
    def wrapper(*args: Any, **kwargs: Any) -> T:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - t0

    return wrapper


def castwork_worker(
    spec: Spec, out: Path, assets: Path, options: EncodeOptions, captions: CaptionStyle | None
) -> dict[str, Any]:
    import media.render as render_module

    plan = build_plan(spec, captions)
    stages: dict[str, float] = {}
    # Split the clock: the PNGs (Pillow, in this process), the rest is ffmpeg.
    render_module.materialize = _timed(render_module.materialize, stages, "text_s")
    render_module.card_background = _timed(render_module.card_background, stages, "text_s")
    before = _usage()
    t0 = time.perf_counter()
    render_module.render_plan(plan, out, asset_dir=assets, options=options)
    wall = time.perf_counter() - t0
    # What the job's quality report adds per output (media.quality; outside the render's
    # clock, as in a job, where it follows the render in the same stage).
    from media.quality.report import inspect

    t1 = time.perf_counter()
    checks = inspect(out, plan, captions=(), speech=None, captions_aligned=True, language="en")
    quality_s = time.perf_counter() - t1
    return {
        "quality_s": quality_s,
        "quality": {c.name: c.status for c in checks},
        "wall_s": wall,
        "text_s": stages.get("text_s", 0.0),
        "ffmpeg_s": wall - stages.get("text_s", 0.0),
        "binary": ffmpeg.binary(),
        "layers": len(plan.layers),
        **_usage_figures(before),
    }


def moviepy_worker(spec: Spec, out: Path, assets: Path, preset: str, crf: int) -> dict[str, Any]:
    from importlib.metadata import version

    from moviepy.config import FFMPEG_BINARY

    plan = build_plan(spec)
    # The very PNGs Castwork drew (its asset folder; drawn here, untimed, when it is missing).
    placed = materialize(plan, assets)
    card_background(plan, assets)
    before = _usage()
    t0 = time.perf_counter()
    moviepy_script(plan, placed, out, preset=preset, crf=crf)
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "binary": FFMPEG_BINARY,
        "moviepy": version("moviepy"),
        "layers": len(placed),
        **_usage_figures(before),
    }


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def moviepy_script(
    plan: RenderPlan, placed: list[Placed], out: Path, *, preset: str, crf: int
) -> None:
    """The peer: the same ad written the ordinary MoviePy 2.x way."""
    from moviepy import AudioFileClip, ColorClip, CompositeVideoClip, ImageClip, vfx

    width, height, fps = plan.width, plan.height, plan.fps

    def ken_burns(clip: Clip) -> CompositeVideoClip:
        duration = clip.frames / fps
        photo = ImageClip(str(clip.source)).with_duration(duration)
        # Cover the frame and crop to its shape (done once: ImageClip transforms are static).
        scale = max(width / photo.w, height / photo.h)
        photo = photo.resized(scale)
        photo = photo.cropped(
            x_center=photo.w / 2, y_center=photo.h / 2, width=width, height=height
        )
        last = max(1, clip.frames - 1) / fps
        z, dz = clip.zoom, clip.zoom - 1.0
        spare_x, spare_y = width * (z - 1.0), height * (z - 1.0)

        def p(t: float) -> float:
            return min(1.0, t / last)

        match clip.motion:
            case "zoom_in":
                moving = photo.resized(lambda t: 1.0 + dz * p(t)).with_position("center")
            case "zoom_out":
                moving = photo.resized(lambda t: z - dz * p(t)).with_position("center")
            case "pan_right":
                moving = photo.resized(z).with_position(lambda t: (-spare_x * p(t), -spare_y / 2))
            case "pan_left":
                moving = photo.resized(z).with_position(
                    lambda t: (-spare_x * (1 - p(t)), -spare_y / 2)
                )
            case "pan_down":
                moving = photo.resized(z).with_position(lambda t: (-spare_x / 2, -spare_y * p(t)))
            case "pan_up":
                moving = photo.resized(z).with_position(
                    lambda t: (-spare_x / 2, -spare_y * (1 - p(t)))
                )
            case _:
                moving = photo
        # The classic recipe: the moving photo inside a frame-sized, opaque composite.
        return CompositeVideoClip([moving], size=(width, height), bg_color=(0, 0, 0))

    scenes = []
    for k, clip in enumerate(plan.clips):
        if clip.kind == "photo":
            scene = ken_burns(clip)
        else:
            color = _rgb(plan.card_background[0])  # Castwork's card is a gradient: same cost
            scene = ColorClip((width, height), color=color, duration=clip.frames / fps)
        scene = scene.with_start(clip.start).with_duration(clip.frames / fps)
        if k > 0:
            scene = scene.with_effects([vfx.CrossFadeIn(plan.transition_s)])
        scenes.append(scene)

    layers = []
    for item in placed:
        layer = item.layer
        first = round(layer.start * fps)
        frames = max(1, round(layer.end * fps) - first)
        text = ImageClip(str(item.png)).with_start(first / fps).with_duration(frames / fps)
        text = text.with_position(_moviepy_position(item, plan))
        effects = []
        if layer.animation != "none" and layer.animation_s > 0:
            effects.append(vfx.CrossFadeIn(layer.animation_s))
        if layer.fade_out_s > 0:
            effects.append(vfx.CrossFadeOut(layer.fade_out_s))
        layers.append(text.with_effects(effects) if effects else text)

    assert plan.audio is not None
    audio = AudioFileClip(str(plan.audio))
    # An opaque background: MoviePy's default (bg_color=None) composites a transparency mask
    # for every frame too, ~30% more Python time here for the same picture.
    video = CompositeVideoClip([*scenes, *layers], size=(width, height), bg_color=(0, 0, 0))
    video = video.with_duration(plan.duration).with_audio(audio)
    video.write_videofile(
        str(out),
        fps=fps,
        codec="libx264",
        preset=preset,
        ffmpeg_params=["-crf", str(crf)],
        audio_codec="aac",
        audio_bitrate="160k",
        audio_fps=48_000,
        threads=MOVIEPY_THREADS,
        temp_audiofile_path=str(out.parent),
        logger=None,
    )
    video.close()
    audio.close()


def _moviepy_position(item: Placed, plan: RenderPlan) -> Any:
    """Where a text goes; slides ease out like Castwork's overlay expressions (clip time)."""
    layer = item.layer
    x, y = item.x, item.y
    if layer.animation_s <= 0 or layer.animation not in ("slide_up", "slide_left", "slide_right"):
        return (x, y)
    dx = round(plan.width * SLIDE_FRACTION)
    dy = round(plan.height * SLIDE_FRACTION * 0.6)
    length = layer.animation_s

    def ease(t: float) -> float:
        return float(max(0.0, 1.0 - t / length) ** 3)

    match layer.animation:
        case "slide_up":
            return lambda t: (x, y + dy * ease(t))
        case "slide_left":
            return lambda t: (x + dx * ease(t), y)
        case _:
            return lambda t: (x - dx * ease(t), y)


def run_worker(args: argparse.Namespace) -> int:
    spec = Spec.load(args.spec)
    if args.worker == "castwork":
        options = EncodeOptions(crf=args.crf, preset=args.preset, oversample=args.oversample)
        result = castwork_worker(spec, args.output, args.assets, options, args.caption_style)
    else:
        result = moviepy_worker(spec, args.output, args.assets, args.preset, args.crf)
    args.result.write_text(json.dumps(result))
    return 0


def caption_styles(args: argparse.Namespace, work: Path) -> dict[str, dict[str, float]]:
    """Each caption style rendered --repeat times, side by side: what word-by-word captions
    (a layer per word) cost over phrase captions (a layer per phrase)."""
    print()
    print("caption styles (same spec, Castwork only):")
    figures: dict[str, dict[str, float]] = {}
    for style in CAPTION_STYLES:
        runs = []
        for i in range(1, args.repeat + 1):
            assets = work / f"assets-{style}-{i}"
            shutil.rmtree(assets, ignore_errors=True)
            runs.append(run_one("castwork", args, work, f"{style}-{i}", assets, style))
        figures[style] = {
            "layers": runs[0]["layers"],
            "wall_s_median": statistics.median(r["wall_s"] for r in runs),
            "text_s_median": statistics.median(r["text_s"] for r in runs),
            "ffmpeg_s_median": statistics.median(r["ffmpeg_s"] for r in runs),
            "peak_mb": max(r["peak_tree_mb"] for r in runs),
        }
    base = figures["phrase"]["wall_s_median"]
    print(
        f"  {'style':<8} {'layers':>6} {'wall s':>7} {'vs phrase':>9} {'text PNGs s':>11} "
        f"{'ffmpeg s':>8} {'peak MB':>7}"
    )
    for style, f in figures.items():
        print(
            f"  {style:<8} {f['layers']:>6.0f} {f['wall_s_median']:>7.2f} "
            f"{f['wall_s_median'] / base:>8.2f}x {f['text_s_median']:>11.2f} "
            f"{f['ffmpeg_s_median']:>8.2f} {f['peak_mb']:>7.0f}"
        )
    return figures


# --- Peak memory of a process tree, from /proc ----------------------------------------------


class TreeSampler:
    """Every ``interval`` s, sum the RSS of ``root`` and all its descendants; keep the peak.

    Descendants are found through /proc/<pid>/stat's parent pid. Only pids above the root's
    are read (children get higher pids unless the pid counter wraps around mid-run)."""

    def __init__(self, root: int, interval: float = SAMPLE_S) -> None:
        self.root = root
        self.interval = interval
        self.peak_bytes = 0
        self.max_procs = 0
        self.samples = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[int]:
        parents: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) <= self.root:
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree = [self.root]
        found = {self.root}
        for pid in sorted(parents):  # parents come before their children
            if parents[pid] in found:
                found.add(pid)
                tree.append(pid)
        return tree

    def _rss(self, pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page
        except (OSError, IndexError, ValueError):
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            tree = self._tree()
            total = sum(self._rss(pid) for pid in tree)
            self.peak_bytes = max(self.peak_bytes, total)
            self.max_procs = max(self.max_procs, len(tree))
            self.samples += 1
            self._stop.wait(self.interval)


# --- The driver -------------------------------------------------------------------------


def run_one(
    kind: str,
    args: argparse.Namespace,
    work: Path,
    tag: str,
    assets: Path,
    captions: CaptionStyle | None = None,
) -> dict[str, Any]:
    output = work / f"{tag}.mp4"
    result_file = work / f"{tag}.json"
    output.unlink(missing_ok=True)
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", kind,
        "--spec", str(work / "spec"), "--output", str(output), "--assets", str(assets),
        "--result", str(result_file), "--preset", args.preset, "--crf", str(args.crf),
        "--oversample", str(args.oversample),
        *(["--caption-style", captions] if captions else []),
    ]  # fmt: skip
    env = dict(os.environ)
    if kind == "moviepy" and args.moviepy_ffmpeg == "system":
        env["FFMPEG_BINARY"] = ffmpeg.binary()
    load = os.getloadavg()[0]
    busy0, steal0 = machine_cpu_s()
    mine0, kids0 = _usage()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with TreeSampler(proc.pid) as sampler:
        log, _ = proc.communicate()
    process_s = time.perf_counter() - t0
    busy1, steal1 = machine_cpu_s()
    mine1, kids1 = _usage()
    sampler_cpu = _cpu(mine1) - _cpu(mine0)
    # What everything else on the machine used meanwhile (other agents' tests): cores.
    others = (busy1 - busy0 - (_cpu(kids1) - _cpu(kids0)) - sampler_cpu) / process_s
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed ({proc.returncode}):\n{log.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    result.update(
        renderer=kind,
        tag=tag,
        output=str(output),
        size_mb=output.stat().st_size / 1e6,
        rtf=result["wall_s"] / DURATION_S,
        process_s=process_s,
        peak_tree_mb=sampler.peak_bytes / 2**20,
        max_procs=sampler.max_procs,
        samples=sampler.samples,
        max_proc_mb=max(result["python_maxrss_mb"], result["ffmpeg_maxrss_mb"]),
        load_before=load,
        others_cores=max(0.0, others),
        steal_cores=(steal1 - steal0) / process_s,
        sampler_cpu_s=sampler_cpu,
        probe=probe(output),
    )
    return result


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy, and stolen by the hypervisor (/proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [ffmpeg.binary("ffprobe"), "-v", "error", "-print_format", "json",
         "-show_format", "-show_streams", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    data = json.loads(out.stdout)
    video = next(s for s in data["streams"] if s["codec_type"] == "video")
    audio = next((s for s in data["streams"] if s["codec_type"] == "audio"), None)
    num, den = (int(v) for v in video["avg_frame_rate"].split("/"))
    with path.open("rb") as f:
        head = f.read(4 << 20)
    x264 = re.search(rb"x264 - core (\d+)( r\d+)?", head)
    return {
        "width": video["width"],
        "height": video["height"],
        "fps": num / den if den else 0.0,
        "frames": int(video.get("nb_frames", 0)),
        "duration_s": float(data["format"]["duration"]),
        "pix_fmt": video.get("pix_fmt"),
        "profile": video.get("profile"),
        "x264": x264.group(0).decode() if x264 else None,
        "audio": (
            f"{audio['codec_name']} {audio['sample_rate']} Hz {audio['channels']} ch "
            f"{float(audio.get('duration', 0)):.2f} s"
            if audio
            else None
        ),
    }


def ffmpeg_version(binary: str) -> str:
    out = subprocess.run([binary, "-hide_banner", "-version"], capture_output=True, text=True)
    return out.stdout.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" ")[0]


def _busy(r: dict[str, Any]) -> str:
    return (
        f"load avg before {r['load_before']:.2f}, other processes used "
        f"{r['others_cores']:.2f} cores meanwhile (steal {r['steal_cores']:.2f})"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    from workers.settings import load_settings

    settings = load_settings().media
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default=settings.preset, help="x264 preset for both renderers")
    ap.add_argument("--crf", type=int, default=settings.crf)
    ap.add_argument("--oversample", type=float, default=settings.oversample, help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=1, help="Castwork renders (median reported)")
    ap.add_argument("--skip-moviepy", action="store_true", help="Castwork only (quick)")
    ap.add_argument(
        "--moviepy-ffmpeg",
        choices=("bundled", "system"),
        default="bundled",
        help="MoviePy's ffmpeg: imageio-ffmpeg's static build (default) or the system one",
    )
    ap.add_argument(
        "--captions",
        choices=("template", "all"),
        default="template",
        help="all: also render every caption style (phrase, karaoke, pop), --repeat times each",
    )
    ap.add_argument("--out", type=Path, help="keep the spec and the videos here")
    ap.add_argument("--json", type=Path, help="write the figures here")
    # Internal: one render in this process.
    ap.add_argument("--worker", choices=("castwork", "moviepy"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--assets", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--caption-style", choices=CAPTION_STYLES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return run_worker(args)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-bench-render-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return bench(args, work)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


def bench(args: argparse.Namespace, work: Path) -> int:
    spec = make_spec(work / "spec")
    plan = build_plan(spec)
    system_ffmpeg = ffmpeg.binary()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"# castwork render bench — {cores} cores (os.cpu_count {os.cpu_count()}), "
        f"load avg {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"spec: template {TEMPLATE}, {plan.width}x{plan.height} {plan.fps} fps, "
        f"{plan.duration:.1f} s ({plan.frames} frames), {len(spec.photos)} photos "
        f"({', '.join(PHOTOS)}, {PHOTO_SIDE} px JPEG), {len(plan.layers)} layers "
        f"({sum(1 for lay in plan.layers if lay.name.startswith('caption'))} captions), "
        f"{plan.transition} {plan.transition_s:.2f} s, soundtrack WAV 48 kHz stereo"
    )
    print(f"x264: preset {args.preset}, CRF {args.crf}; audio AAC 160k")
    print(f"castwork ffmpeg: {system_ffmpeg} {ffmpeg_version(system_ffmpeg)}")

    results: list[dict[str, Any]] = []
    first_assets = work / "assets-castwork-1"
    for i in range(1, args.repeat + 1):
        assets = work / f"assets-castwork-{i}"
        shutil.rmtree(assets, ignore_errors=True)  # text PNGs drawn afresh every time
        r = run_one("castwork", args, work, f"castwork-{i}", assets)
        results.append(r)
        print(
            f"  castwork run {i}: {r['wall_s']:.2f} s (text PNGs {r['text_s']:.2f} s, "
            f"ffmpeg {r['ffmpeg_s']:.2f} s), peak {r['peak_tree_mb']:.0f} MB; {_busy(r)}; "
            f"then its quality report {r['quality_s']:.2f} s ({r['quality']})",
            flush=True,
        )
    castwork = list(results)
    moviepy: dict[str, Any] | None = None
    if not args.skip_moviepy:
        moviepy = run_one("moviepy", args, work, "moviepy", first_assets)
        results.append(moviepy)
        print(
            f"  moviepy: {moviepy['wall_s']:.1f} s, peak {moviepy['peak_tree_mb']:.0f} MB; "
            f"{_busy(moviepy)}; ffmpeg {moviepy['binary']} "
            f"{ffmpeg_version(moviepy['binary'])}, MoviePy {moviepy['moviepy']}",
            flush=True,
        )

    cw_wall = statistics.median(r["wall_s"] for r in castwork)
    cw_peak = max(r["peak_tree_mb"] for r in castwork)
    rows = [
        ("castwork" + (f" (median of {len(castwork)})" if len(castwork) > 1 else ""), cw_wall,
         cw_peak, max(r["max_proc_mb"] for r in castwork),
         statistics.median(r["python_cpu_s"] for r in castwork),
         statistics.median(r["ffmpeg_cpu_s"] for r in castwork),
         statistics.median(r["size_mb"] for r in castwork)),
    ]  # fmt: skip
    if moviepy is not None:
        rows.append(
            ("moviepy", moviepy["wall_s"], moviepy["peak_tree_mb"], moviepy["max_proc_mb"],
             moviepy["python_cpu_s"], moviepy["ffmpeg_cpu_s"], moviepy["size_mb"])
        )  # fmt: skip
    print()
    print(
        f"{'renderer':<26} {'wall s':>7} {'x real time':>11} {'peak MB':>8} {'max proc MB':>11} "
        f"{'py CPU s':>8} {'ffmpeg CPU s':>12} {'size MB':>7}"
    )
    for name, wall, peak, proc_mb, py_cpu, ff_cpu, size in rows:
        print(
            f"{name:<26} {wall:>7.2f} {wall / DURATION_S:>11.3f} {peak:>8.0f} {proc_mb:>11.0f} "
            f"{py_cpu:>8.1f} {ff_cpu:>12.1f} {size:>7.2f}"
        )
    print(
        "peak MB: RSS of the process tree (Python + ffmpeg children) summed, sampled every "
        f"{SAMPLE_S * 1000:.0f} ms; max proc MB: the largest single process (getrusage)"
    )

    print()
    print("outputs (ffprobe):")
    for r in results:
        p = r["probe"]
        print(
            f"  {r['tag']:<12} {p['width']}x{p['height']} {p['fps']:.2f} fps {p['frames']} frames "
            f"{p['duration_s']:.3f} s {p['pix_fmt']} {p['profile']}, {p['x264']}; "
            f"audio {p['audio']}"
        )

    ratio = moviepy["wall_s"] / cw_wall if moviepy is not None else None
    cw_cpu = statistics.median(r["python_cpu_s"] + r["ffmpeg_cpu_s"] for r in castwork)
    cpu_ratio = None
    if moviepy is not None:
        cpu_ratio = (moviepy["python_cpu_s"] + moviepy["ffmpeg_cpu_s"]) / cw_cpu
    print()
    if ratio is not None:
        print(
            f"MoviePy / Castwork wall time: {ratio:.1f}x; CPU time: {cpu_ratio:.1f}x (less "
            "sensitive to other load, but blind to how well each uses the cores)"
        )
    rtf = cw_wall / DURATION_S
    print(f"{verdict(rtf <= TARGET_RTF)}  Castwork {rtf:.3f}x real time (target <= {TARGET_RTF}x)")
    if ratio is not None:
        print(
            f"{verdict(ratio >= TARGET_RATIO)}  {ratio:.1f}x faster than MoviePy "
            f"(target >= {TARGET_RATIO:.0f}x)"
        )
    else:
        print("SKIP  speed-up over MoviePy (--skip-moviepy)")
    print(
        f"{verdict(cw_peak <= TARGET_PEAK_MB)}  Castwork peak {cw_peak:.0f} MB "
        f"(target <= {TARGET_PEAK_MB:.0f} MB)"
    )
    styles = caption_styles(args, work) if args.captions == "all" else {}
    walls = [r["wall_s"] for r in castwork]
    print(
        f"Castwork wall over {len(walls)} run(s): median {cw_wall:.2f} s, "
        f"min {min(walls):.2f} s, max {max(walls):.2f} s"
    )
    busiest = max(r["others_cores"] for r in results)
    note = " (wall times are inflated)" if busiest > 0.25 else ""
    print(
        f"other processes used up to {busiest:.2f} of {cores} cores during a run{note}; "
        f"load avg after: {os.getloadavg()[0]:.2f} (it counts this bench's own threads too)"
    )

    if args.json is not None:
        figures = {
            "cores": cores,
            "preset": args.preset,
            "crf": args.crf,
            "duration_s": DURATION_S,
            "castwork_ffmpeg": f"{system_ffmpeg} {ffmpeg_version(system_ffmpeg)}",
            "castwork_wall_s_median": cw_wall,
            "castwork_rtf": rtf,
            "castwork_peak_mb": cw_peak,
            "moviepy_over_castwork": ratio,
            "moviepy_over_castwork_cpu": cpu_ratio,
            "caption_styles": styles,
            "targets": {
                "rtf": rtf <= TARGET_RTF,
                "ratio": None if ratio is None else ratio >= TARGET_RATIO,
                "peak_mb": cw_peak <= TARGET_PEAK_MB,
            },
            "runs": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
