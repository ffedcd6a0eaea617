"""Video clips among the photos: told apart by their bytes, checked by ffprobe, refused with a
reason when broken or out of bounds, normalised (muted, 30 fps, H.264), and placed as scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from media import ffmpeg
from media.clips import ClipLimits, check, prepare_clip, sniff_video
from media.errors import InputError
from media.graph import Placed, build_args
from media.plan import plan_render, plan_timeline
from media.templates import get_template, render_all_copy
from tests.ad_helpers import photo_bytes

FIELDS = {
    "headline": "Fresh coffee",
    "description": None,
    "price": "$9",
    "cta": "Order now",
    "store": None,
    "language": "en",
}


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    size: str = "320x240",
    codec: str = "libx264",
    audio: bool = True,
) -> Path:
    """A moving test picture (and a tone) encoded by ffmpeg: what a phone would upload."""
    args = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d={seconds}"]
    if audio:
        args += [
            "-f",
            "lavfi",
            "-i",
            f"sine=f=300:d={seconds}",
            "-c:a",
            "aac" if path.suffix != ".webm" else "libopus",
        ]
    args += ["-c:v", codec, "-shortest"]
    if codec == "libx264":
        args += ["-preset", "ultrafast"]
    else:
        args += ["-deadline", "realtime", "-cpu-used", "8"]
    ffmpeg.run([*args, str(path)], timeout_s=60)
    return path


def test_clips_are_told_from_photos_by_their_bytes(tmp_path: Path) -> None:
    mp4 = make_clip(tmp_path / "a.mp4", seconds=1)
    webm = make_clip(tmp_path / "b.webm", seconds=1, codec="libvpx-vp9")
    assert sniff_video(mp4.read_bytes()[:1024]) == "mp4"
    assert sniff_video(webm.read_bytes()[:1024]) == "webm"
    assert sniff_video(photo_bytes("coffee")) is None
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"  # a photo's ISO brands
    assert sniff_video(heic) is None


def test_a_clip_is_muted_and_normalised(tmp_path: Path) -> None:
    clip = prepare_clip(make_clip(tmp_path / "up.mov"), tmp_path / "in", name="up.mov")
    probe = ffmpeg.probe(clip.path)
    assert clip.had_audio and probe.audio_codec is None  # its sound is gone
    assert (probe.video_codec, round(probe.fps or 0), probe.width, probe.height) == (
        "h264",
        30,
        320,
        240,
    )
    assert probe.duration == pytest.approx(2.0, abs=0.1)
    webm = prepare_clip(
        make_clip(
            tmp_path / "up.webm", codec="libvpx-vp9", audio=False, size="240x426", seconds=12
        ),
        tmp_path / "in",
        name="up.webm",
        limits=ClipLimits(keep_s=3.0),
    )
    assert ffmpeg.probe(webm.path).duration == pytest.approx(
        3.0, abs=0.1
    )  # only what a scene needs


@pytest.mark.reliability(
    "input", "broken, truncated and out-of-bounds video clips: refused with a reason"
)
def test_broken_and_out_of_bounds_clips_are_refused_with_a_reason(tmp_path: Path) -> None:
    good = make_clip(tmp_path / "good.mp4").read_bytes()
    cases = {
        "cut_short": (good[:4000], "video_unreadable"),
        "header_only": (good[:64], "video_unreadable"),
        "not_a_video": (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500, "video_unreadable"),
    }
    for what, (data, reason) in cases.items():
        with pytest.raises(InputError) as caught:
            prepare_clip(data, tmp_path / "in", name=f"{what}.mp4")
        assert caught.value.fields["reason"] == reason, what
        assert f"{what}.mp4:" in str(caught.value)
    long = make_clip(tmp_path / "long.mp4", seconds=4, size="64x64", audio=False)
    with pytest.raises(InputError, match=r"lasts 4.0 s; 0.5 to 3 s"):
        prepare_clip(long, tmp_path / "in", name="long.mp4", limits=ClipLimits(max_seconds=3))
    with pytest.raises(InputError, match="over the 1 MB limit"):
        prepare_clip(
            good + b"\x00" * (1 << 20),
            tmp_path / "in",
            name="big.mp4",
            limits=ClipLimits(max_bytes=1 << 20),
        )


def test_what_ffprobe_says_decides() -> None:
    base = {"format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "5.0"},
            "streams": [{"codec_type": "video", "codec_name": "h264", "width": 1920, "height": 1080}]}  # fmt: skip
    check(base, "ok.mp4", ClipLimits())
    rules = [
        ({"format": {"format_name": "avi", "duration": "5"}}, "MP4, MOV or WebM"),
        ({"streams": [{"codec_type": "audio", "codec_name": "aac"}]}, "no picture"),
        (
            {"streams": [{"codec_type": "video", "codec_name": "gif", "width": 9, "height": 9}]},
            "codec gif",
        ),
        (
            {
                "streams": [
                    {"codec_type": "video", "codec_name": "h264", "width": 8000, "height": 100}
                ]
            },
            "8000x100",
        ),
        ({"format": {"format_name": "matroska,webm", "duration": "0.2"}}, "lasts 0.2 s"),
    ]
    for change, message in rules:
        with pytest.raises(InputError, match=message):
            check({**base, **change}, "x.mp4", ClipLimits())


def test_a_clip_scene_plays_the_clip_without_motion() -> None:
    t = get_template("showcase")
    tl = plan_timeline(t, render_all_copy(t, "en", FIELDS), n_images=2, narration_s=5.0)
    images = [Path("/in/photo.jpg"), Path("/in/0123abcd.mp4")]
    plan = plan_render(tl, t, "9:16", images=images, logo=None, audio=None)
    assert [c.kind for c in plan.clips] == ["photo", "video", "card"]
    placed = [Placed(la, Path(f"/w/l{i}.png"), 0, 0, 10, 10) for i, la in enumerate(plan.layers)]
    args = build_args(plan, placed, Path("/w/card.png"), Path("/o/out.mp4"))
    graph = args[args.index("-filter_complex") + 1]
    assert graph.count("zoompan=") == 1  # the photo moves; the clip plays as it is
    at = args.index(str(images[1]))
    assert args[at - 5 : at] == ["-stream_loop", "-1", "-t", args[at - 2], "-i"]  # looped, cut
    assert "[1:v]fps=30,scale=1080:1920:force_original_aspect_ratio=increase" in graph
