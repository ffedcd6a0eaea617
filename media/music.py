"""Background music made by the project: three moods synthesized in numpy, no audio files.

Ad videos need music under the narration, and the music must carry a licence we can vouch for.
So we make it ourselves, deterministically, from code (GPL like the rest of Castwork): a short
loop of a few bars is rendered into a circular buffer, so that note tails that run past the
last bar wrap into the first one and the loop tiles seamlessly to any duration. The mixer
(:mod:`media.soundtrack`) cuts it to the video's length and fades it.

Styles, one per template mood:

* ``bright``: major key, 116 bpm, plucky arpeggio over a soft pad, light kick and hat.
* ``pulse``: minor key, 126 bpm, four-on-the-floor kick, off-beat bass, saw-ish chord stabs.
* ``calm``: 84 bpm, warm pad chords and a gentle FM bell melody, no drums.
"""

from __future__ import annotations

import functools
import hashlib
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from base.files import atomic_open
from voice.audio import float_to_int16

MusicStyle = Literal["bright", "pulse", "calm"]
STYLES: tuple[MusicStyle, ...] = get_args(MusicStyle)

# Bump when the synthesis changes: it is part of the cache key, so old files are never reused.
VERSION = 2
PEAK = 0.9

Float32Array = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.float64]
AnyFloats = Float32Array | FloatArray  # notes may come float32 from the caches

_TABLE_SIZE = 4096
_BEATS_PER_BAR = 4


@dataclass(frozen=True)
class _Style:
    bpm: float
    bars: int  # length of the loop; the chord list is cycled over it
    chords: tuple[tuple[int, ...], ...]  # MIDI notes, one chord per bar


_STYLES: dict[MusicStyle, _Style] = {
    # D major, I-V-vi-IV: the stock "upbeat product" progression.
    "bright": _Style(116, 8, ((62, 66, 69), (57, 61, 64, 69), (59, 62, 66), (55, 59, 62, 67))),
    # A minor, i-VI-III-VII: driving, works under a sale announcement.
    "pulse": _Style(126, 8, ((57, 60, 64), (53, 57, 60), (60, 64, 67), (55, 59, 62))),
    # F major with sevenths, Imaj7-vi7-IVmaj7-V: soft and unhurried.
    "calm": _Style(84, 4, ((53, 57, 60, 64), (50, 53, 57, 60), (46, 50, 53, 57), (48, 52, 55, 60))),
}


def _hz(midi: float) -> float:
    return float(440.0 * 2.0 ** ((midi - 69.0) / 12.0))


def _loop_len(style: _Style, sample_rate: int) -> int:
    return round(style.bars * _BEATS_PER_BAR * 60.0 / style.bpm * sample_rate)


class _Loop:
    """A stereo circular buffer: what is written past the end wraps to the start."""

    def __init__(self, style: _Style, sample_rate: int) -> None:
        self.rate = sample_rate
        self.beat_s = 60.0 / style.bpm
        self.n = _loop_len(style, sample_rate)
        self.buf = np.zeros((self.n, 2), dtype=np.float64)

    def add(self, beat: float, mono: AnyFloats, gain: float, pan: float = 0.0) -> None:
        """Add ``mono`` at ``beat`` (in beats from the loop start), equal-power panned."""
        angle = (pan + 1.0) * np.pi / 4.0
        self.add_stereo(beat, mono * (gain * np.cos(angle)), mono * (gain * np.sin(angle)))

    def add_stereo(self, beat: float, left: AnyFloats, right: AnyFloats) -> None:
        start = round(beat * self.beat_s * self.rate) % self.n
        pos = 0
        while pos < len(left):  # a tail longer than the space left wraps, maybe several times
            at = (start + pos) % self.n
            take = min(self.n - at, len(left) - pos)
            self.buf[at : at + take, 0] += left[pos : pos + take]
            self.buf[at : at + take, 1] += right[pos : pos + take]
            pos += take


# --- Oscillators and envelopes -------------------------------------------------------------


def _time(seconds: float, rate: int) -> FloatArray:
    return np.arange(round(seconds * rate), dtype=np.float64) / rate


def _table(amplitudes: list[float]) -> FloatArray:
    """One band-limited cycle from harmonic amplitudes; lookup costs the same for any count."""
    phase = np.arange(_TABLE_SIZE) / _TABLE_SIZE
    cycle = sum(a * np.sin(2 * np.pi * (k + 1) * phase) for k, a in enumerate(amplitudes))
    return np.asarray(cycle, dtype=np.float64) / float(np.max(np.abs(cycle)))


def _saw_table(harmonics: int, rolloff: float) -> FloatArray:
    return _table([1.0 / (k**rolloff) for k in range(1, harmonics + 1)])


def _osc(table: FloatArray, freq: float, t: FloatArray) -> FloatArray:
    # Harmonics of the table above Nyquist would alias: callers keep freq * harmonics low.
    # Linear interpolation between table points: nearest-point lookup leaves a noise floor
    # near -65 dB, audible under a quiet pad.
    pos = np.mod(freq * t, 1.0) * _TABLE_SIZE
    idx = pos.astype(np.intp)
    frac = pos - idx
    out: FloatArray = table[idx] + (table[(idx + 1) % _TABLE_SIZE] - table[idx]) * frac
    return out


def _ar(t: FloatArray, attack_s: float, release_s: float, hold_s: float) -> FloatArray:
    """Attack-hold-release envelope with raised-cosine ramps (no clicks)."""
    rise = np.clip(t / attack_s, 0.0, 1.0)
    fall = np.clip((hold_s + release_s - t) / release_s, 0.0, 1.0)
    env: FloatArray = (0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))).astype(np.float64)
    return env


def _decay(t: FloatArray, rate: float, attack_s: float = 0.002) -> FloatArray:
    env: FloatArray = np.minimum(t / attack_s, 1.0) * np.exp(-rate * t)
    return env


# --- Instruments ---------------------------------------------------------------------------


def _frozen(x: FloatArray) -> Float32Array:
    # Cached notes are shared, so nobody may change them in place; float32 halves the cache.
    out = x.astype(np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=64)  # the arpeggios use a few dozen distinct notes
def _pluck(freq: float, rate: int, dur_s: float = 0.45) -> Float32Array:
    """Additive pluck: upper harmonics die faster than the fundamental, like a plucked string."""
    t = _time(dur_s, rate)
    out = np.zeros_like(t)
    for k in range(1, 9):
        if k * freq < rate * 0.45:
            out += np.sin(2 * np.pi * k * freq * t) * np.exp(-(4.0 + 3.0 * k) * t) / k
    fade = np.clip((dur_s - t) / 0.02, 0.0, 1.0)  # end at zero: the note is cut, not clicked
    return _frozen(out * np.minimum(t / 0.002, 1.0) * fade)


@functools.lru_cache(maxsize=12)  # 3 styles x 4 chords: ~20 MB at 48 kHz
def _pad_voices(
    notes: tuple[int, ...], bar_s: float, rate: int
) -> tuple[Float32Array, Float32Array]:
    """One bar of a soft saw pad chord, (left, right); detuned apart for width and slow beating.

    Cached: progressions repeat chords, and the pad does not depend on the seed.
    """
    table = _saw_table(6, 1.6)
    t = _time(bar_s + 0.9, rate)
    env = _ar(t, 0.45, 0.9, bar_s) / (2 * len(notes))
    left = np.zeros_like(t)
    right = np.zeros_like(t)
    for note in notes:
        f = _hz(note)
        left += _osc(table, f * 2 ** (6 / 1200), t) + _osc(table, f * 2 ** (-3 / 1200), t)
        right += _osc(table, f * 2 ** (-6 / 1200), t) + _osc(table, f * 2 ** (3 / 1200), t)
    return _frozen(left * env), _frozen(right * env)


def _pad(loop: _Loop, notes: tuple[int, ...], beat: float, gain: float) -> None:
    left, right = _pad_voices(notes, _BEATS_PER_BAR * loop.beat_s, loop.rate)
    loop.add_stereo(beat, left * gain, right * gain)


def _kick(rate: int) -> FloatArray:
    t = _time(0.35, rate)
    freq = 48.0 + 110.0 * np.exp(-t * 28.0)  # the pitch drop is what reads as a kick
    phase = 2 * np.pi * np.cumsum(freq) / rate
    kick: FloatArray = np.sin(phase) * _decay(t, 9.0, 0.001) * np.clip((0.35 - t) / 0.02, 0, 1)
    return kick


def _hat(rng: np.random.Generator, rate: int, decay: float = 70.0) -> FloatArray:
    t = _time(0.12, rate)
    noise = rng.standard_normal(len(t))
    bright = np.diff(np.diff(noise, prepend=0.0), prepend=0.0) / 4.0  # crude high-pass
    hat: FloatArray = bright * _decay(t, decay, 0.0005) * np.clip((0.12 - t) / 0.01, 0, 1)
    return hat


def _bell(freq: float, rate: int, dur_s: float = 2.6) -> FloatArray:
    """Two-operator FM bell: a decaying modulation index makes the attack bright, the tail pure."""
    t = _time(dur_s, rate)
    index = 1.3 * np.exp(-t * 3.0)  # modest: a soft mallet, not a struck alarm
    mod = index * np.sin(2 * np.pi * 3.5 * freq * t)
    bell: FloatArray = np.sin(2 * np.pi * freq * t + mod) * _decay(t, 1.6, 0.008)
    return bell * np.clip((dur_s - t) / 0.05, 0.0, 1.0)


def _synth_note(
    table: FloatArray, freq: float, rate: int, dur_s: float, decay: float
) -> FloatArray:
    t = _time(dur_s, rate)
    note: FloatArray = _osc(table, freq, t) * _decay(t, decay, 0.003)
    return note * np.clip((dur_s - t) / 0.01, 0.0, 1.0)


# --- Styles --------------------------------------------------------------------------------


def _chord_at(style: _Style, bar: int) -> tuple[int, ...]:
    return style.chords[bar % len(style.chords)]


def _bright(loop: _Loop, style: _Style, rng: np.random.Generator) -> None:
    kick, rate = _kick(loop.rate), loop.rate
    patterns = ((0, 1, 2, 1), (0, 1, 2, 3), (0, 2, 1, 2))
    for bar in range(style.bars):
        chord = _chord_at(style, bar)
        base = bar * _BEATS_PER_BAR
        _pad(loop, chord, base, 0.22)
        tones = [n + 12 for n in chord]
        pattern = patterns[int(rng.integers(len(patterns)))]
        for step in range(8):  # eighth-note arpeggio
            note = tones[pattern[step % 4] % len(tones)] + (12 if step >= 4 and bar % 2 else 0)
            loop.add(base + step / 2, _pluck(_hz(note), rate), 0.32, pan=-0.3 + 0.6 * (step % 2))
        for beat in (0, 2):
            loop.add(base + beat, kick, 0.45)
        for beat in range(4):
            loop.add(base + beat + 0.5, _hat(rng, rate), 0.10, pan=0.2)


def _pulse(loop: _Loop, style: _Style, rng: np.random.Generator) -> None:
    kick, rate = _kick(loop.rate), loop.rate
    bass_table, stab_table = _saw_table(10, 1.0), _saw_table(14, 1.0)
    stab_beats = (0.75, 1.5, 2.75, 3.5)
    for bar in range(style.bars):
        chord = _chord_at(style, bar)
        base = bar * _BEATS_PER_BAR
        _pad(loop, chord, base, 0.10)
        bass = _synth_note(bass_table, _hz(chord[0] - 12), rate, 0.22, 9.0)
        for beat in range(4):
            loop.add(base + beat, kick, 0.6)
            loop.add(base + beat + 0.5, _hat(rng, rate, 35.0), 0.16)  # open-ish off-beat hat
            loop.add(base + beat + 0.25, _hat(rng, rate), 0.05, pan=0.3)
            loop.add(base + beat + 0.5, bass, 0.35)
        for i, stab_beat in enumerate(stab_beats):
            if rng.random() < 0.8 or i == 0:
                for note in chord:
                    stab = _synth_note(stab_table, _hz(note + 12), rate, 0.24, 11.0)
                    loop.add(base + stab_beat, stab, 0.12, pan=-0.4 if i % 2 else 0.4)


def _calm(loop: _Loop, style: _Style, rng: np.random.Generator) -> None:
    sub = _table([1.0, 0.15])
    bar_s = _BEATS_PER_BAR * loop.beat_s
    for bar in range(style.bars):
        chord = _chord_at(style, bar)
        base = bar * _BEATS_PER_BAR
        _pad(loop, chord, base, 0.30)
        t = _time(bar_s + 0.9, loop.rate)
        loop.add(base, _osc(sub, _hz(chord[0] - 12), t) * _ar(t, 0.5, 0.9, bar_s), 0.12)
        tones = sorted(n + 24 for n in chord)
        for beat in (0.0, 1.5, 2.0 + float(rng.integers(2))):  # a sparse, unhurried line
            note = tones[int(rng.integers(len(tones)))]
            loop.add(
                base + beat, _bell(_hz(note), loop.rate), 0.16, pan=float(rng.uniform(-0.4, 0.4))
            )


_RENDER: dict[MusicStyle, Callable[[_Loop, _Style, np.random.Generator], None]] = {
    "bright": _bright,
    "pulse": _pulse,
    "calm": _calm,
}


def loop_samples(style: MusicStyle, sample_rate: int = 48_000) -> int:
    """Length of the style's loop: the music repeats exactly with this period."""
    return _loop_len(_STYLES[style], sample_rate)


def _render_loop(style: MusicStyle, sample_rate: int, seed: int) -> FloatArray:
    spec = _STYLES[style]
    loop = _Loop(spec, sample_rate)
    # The seed varies pattern choices and noise; one generator per call keeps it deterministic.
    _RENDER[style](loop, spec, np.random.default_rng(seed))
    loop.buf -= loop.buf.mean(axis=0)  # no DC: it would eat headroom and thump at the cut
    buf: FloatArray = loop.buf * (PEAK / float(np.max(np.abs(loop.buf))))
    return buf


def synthesize(
    style: MusicStyle, duration_s: float, *, sample_rate: int = 48_000, seed: int = 0
) -> Float32Array:
    """``duration_s`` of music in ``style``: float32, shape (n, 2), peak <= 0.9.

    The loop is peak-normalized once and tiled, so the piece repeats exactly every few bars
    with no seam; cutting and fading is the mixer's job.
    """
    if style not in _STYLES:
        raise ValueError(f"unknown music style {style!r}; choose one of {', '.join(STYLES)}")
    if not duration_s > 0:
        raise ValueError(f"music duration must be positive, got {duration_s}")
    loop = _render_loop(style, sample_rate, seed)
    n = round(duration_s * sample_rate)
    reps = -(-n // len(loop))
    music = np.tile(loop, (reps, 1))[:n].astype(np.float32)
    # float32 rounding may lift the peak by an ulp; the promise is <= PEAK, exactly.
    return np.clip(music, -PEAK, PEAK, out=music)


# --- Files ---------------------------------------------------------------------------------


def write_wav_atomic(path: Path, samples: Float32Array, sample_rate: int) -> None:
    """Write a 16-bit WAV (mono or (n, channels)) so readers never see a half-written file."""
    frames = samples.reshape(len(samples), -1)
    with atomic_open(path) as f, wave.open(f, "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(float_to_int16(frames).astype("<i2").tobytes())


def music_file(
    style: MusicStyle, duration_s: float, cache_dir: Path, *, sample_rate: int = 48_000
) -> Path:
    """A cached 16-bit stereo WAV of :func:`synthesize` (seed 0); made once per key.

    The name carries style, duration and a hash of everything that shapes the audio (the
    synthesis version included), so a changed synthesizer never serves a stale file.
    """
    key = f"{VERSION}:{style}:{duration_s:.3f}:{sample_rate}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = cache_dir / f"music-{style}-{round(duration_s * 1000)}ms-{digest}.wav"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_wav_atomic(path, synthesize(style, duration_s, sample_rate=sample_rate), sample_rate)
    return path
