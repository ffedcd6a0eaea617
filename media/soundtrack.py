"""The soundtrack of one ad video: narration over ducked music, normalized for social feeds.

Mixed once per job, offline, so everything can look ahead: the music dips *before* the first
syllable instead of after it, and the peak limiter lowers the gain before a peak arrives.
Steps, all at 48 kHz stereo:

1. Place the narration (resampled with soxr) at its offset on the video's timeline.
2. Find where speech is (given spans, or 20 ms RMS windows above a threshold) and bridge
   pauses shorter than ~0.6 s, so the music does not pump between words.
3. Tile the music to the video's length, duck it under speech with attack/release ramps,
   fade it in and out.
4. Normalize the sum to the target integrated loudness (ITU-R BS.1770-4 via pyloudnorm;
   -14 LUFS is what the big feeds play at) and hold the true peak under the ceiling with a
   look-ahead limiter on a 4x oversampled peak estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyloudnorm
import soxr

from media.music import Float32Array, write_wav_atomic
from voice.audio import float_to_int16

RATE = 48_000
# BS.1770's absolute gate: below it nothing is measurable, and it is what silence reports.
SILENCE_LUFS = -70.0
BRIDGE_S = 0.6  # pauses shorter than this keep the music down
_WINDOW_S = 0.02
_SPEECH_REL_DB = -30.0  # a window is speech when within 30 dB of the narration's loud windows
_SPEECH_ABS_DB = -55.0  # ...and above this, so breath and dither are not speech
_OVERSAMPLE = 4
_LIMIT_MARGIN_DB = 0.1  # aim a little under the ceiling: the gain curve itself bends peaks
_LIMIT_ATTACK_DB_PER_S = 1200.0  # gain falls at most 6 dB in 5 ms, ahead of the peak
_LIMIT_RELEASE_DB_PER_S = 120.0  # and recovers 6 dB in 50 ms after it
# The limiter costs loudness; the gain that wins it back is solved on a model of the meter
# and confirmed by pyloudnorm on the written samples (a second real pass is rare).
_LOUDNESS_PASSES = 3
_LOUDNESS_TOLERANCE_LU = 0.1
_MODEL_TOLERANCE_LU = 0.02
_SOLVE_STEPS = 8
_MAX_STEP_DB = 12.0
_MOST_LIMITING_DB = 12.0  # never push more than this into the limiter to win loudness
_BLOCK_S = 0.4  # BS.1770 gating blocks, as pyloudnorm cuts them
_BLOCK_OVERLAP = 0.75

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class MixSpec:
    total_s: float  # the video's duration
    narration_offset_s: float  # when speech starts in the video
    music_gain_db: float = -16.0  # music level when nobody speaks (before normalization)
    duck_db: float = -10.0  # extra attenuation of the music while speech plays
    attack_s: float = 0.08
    release_s: float = 0.35
    fade_in_s: float = 0.3
    fade_out_s: float = 1.2  # music fades out at the very end
    target_lufs: float = -14.0
    true_peak_db: float = -1.0


@dataclass(frozen=True)
class MixReport:
    """What was written, as measured on the written file.

    ``speech_to_music_db`` compares narration and music RMS over the speech samples (before
    the common normalization gain, which does not change it); it is -inf when there is no
    speech and +inf when there is speech but no music.
    """

    path: Path
    duration_s: float
    # pyloudnorm; SILENCE_LUFS for silence or a clip shorter than one 400 ms gating block
    integrated_lufs: float
    peak_db: float  # 4x oversampled peak, a true-peak estimate; -inf for silence
    speech_to_music_db: float


@dataclass(frozen=True)
class Stems:
    """The mix before summing and normalization, aligned on the video's 48 kHz timeline."""

    narration: Float32Array  # (n,) mono, placed at its offset
    music: Float32Array  # (n, 2) ducked, faded, at music_gain_db
    speech: BoolArray  # (n,) where speech is, before bridging pauses


# --- Placement and speech ------------------------------------------------------------------


def _samples(seconds: float) -> int:
    return round(seconds * RATE)


def _place_narration(narration: Float32Array, rate: int, spec: MixSpec, n: int) -> Float32Array:
    mono = narration if narration.ndim == 1 else narration.mean(axis=1)
    end_s = spec.narration_offset_s + len(mono) / rate
    if end_s > spec.total_s + 1e-6:
        raise ValueError(
            f"narration ends at {end_s:.3f} s but the video is {spec.total_s:.3f} s long; "
            "the planner must make the video at least as long as offset + narration"
        )
    speech = mono.astype(np.float32, copy=False)
    if rate != RATE and len(speech):
        speech = soxr.resample(speech, rate, RATE, quality="HQ").astype(np.float32)
    start = _samples(spec.narration_offset_s)
    out = np.zeros(n, dtype=np.float32)
    # Resampling may round up by a sample; the check above is on the source, the truth.
    take = min(len(speech), n - start)
    out[start : start + take] = speech[:take]
    return out


def detect_speech(placed: Float32Array) -> BoolArray:
    """Per-sample speech mask from 20 ms RMS windows of the placed narration."""
    win = _samples(_WINDOW_S)
    n = len(placed)
    padded = np.zeros(-(-n // win) * win, dtype=np.float64)
    padded[:n] = placed
    rms = np.sqrt(np.mean(padded.reshape(-1, win) ** 2, axis=1))
    floor = 10 ** (_SPEECH_ABS_DB / 20)
    # The reference is taken over sounding windows only: a short narration in a long video
    # would otherwise have a silent 95th percentile.
    sounding = rms[rms > floor]
    loud = float(np.percentile(sounding, 95)) if sounding.size else 0.0
    threshold = max(loud * 10 ** (_SPEECH_REL_DB / 20), floor)
    mask: BoolArray = np.repeat(rms > threshold, win)[:n]
    return mask


def _spans_mask(spans: Sequence[tuple[float, float]], n: int) -> BoolArray:
    mask = np.zeros(n, dtype=np.bool_)
    for start, end in spans:
        mask[max(_samples(start), 0) : max(_samples(end), 0)] = True
    return mask


def _edges(mask: BoolArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(first sample of each speech run, one past its last sample)."""
    step = np.diff(mask.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(step > 0), np.flatnonzero(step < 0)


def _bridge(mask: BoolArray, max_gap: int) -> BoolArray:
    """Fill the pauses between speech runs that are at most ``max_gap`` samples long."""
    starts, ends = _edges(mask)
    short = (starts[1:] - ends[:-1]) <= max_gap
    out = mask.copy()
    for gap_start, gap_end in zip(
        ends[:-1][short].tolist(), starts[1:][short].tolist(), strict=True
    ):
        out[gap_start:gap_end] = True
    return out


# --- Music envelope ------------------------------------------------------------------------


def duck_amount(mask: BoolArray, attack_s: float, release_s: float) -> FloatArray:
    """0..1: 1 under speech, ramping up ``attack_s`` ahead of it and down ``release_s`` after.

    Offline we can look ahead, so the music is already down when the first syllable starts.
    The ramps are raised-cosine, so the gain change itself makes no click; only the few
    samples around speech edges are computed.
    """
    amount = mask.astype(np.float64)
    n = len(mask)
    attack, release = max(round(attack_s * RATE), 1), max(round(release_s * RATE), 1)
    # Ramp values by distance to the nearest speech sample (0 at the far end of the ramp).
    up = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    down = 0.5 + 0.5 * np.cos(np.pi * np.arange(1, release + 1) / release)
    starts, ends = _edges(mask)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        lo = max(start - attack, 0)
        np.maximum(amount[lo:start], up[attack - (start - lo) :], out=amount[lo:start])
        hi = min(end + release, n)
        np.maximum(amount[end:hi], down[: hi - end], out=amount[end:hi])
    return amount


def _fades(n: int, fade_in_s: float, fade_out_s: float) -> FloatArray:
    """Quarter-sine fade in and out; only the ramps are computed, the rest stays 1."""
    curve = np.ones(n, dtype=np.float64)
    for length, ramp in ((fade_in_s, slice(0, None)), (fade_out_s, slice(None, None, -1))):
        k = min(round(length * RATE), n)
        if k > 0:
            shape = np.sin(0.5 * np.pi * np.arange(k) / k)
            curve[ramp][:k] *= shape
    return curve


def _fit_music(music: Float32Array, rate: int, n: int) -> Float32Array:
    stereo = music.reshape(len(music), -1)
    if stereo.shape[1] == 1:
        stereo = np.repeat(stereo, 2, axis=1)
    elif stereo.shape[1] != 2:
        raise ValueError(f"music must be mono or stereo, got {stereo.shape[1]} channels")
    if len(stereo) == 0:
        raise ValueError("music is empty")
    if rate != RATE:
        stereo = soxr.resample(stereo, rate, RATE, quality="HQ")
    reps = -(-n // len(stereo))
    # The music is made to loop: tiling is seamless by construction (media.music).
    tiled: Float32Array = np.tile(stereo, (reps, 1))[:n].astype(np.float32)
    return tiled


def render_stems(
    narration: Float32Array | None,
    narration_rate: int,
    music: Float32Array | None,
    music_rate: int,
    spec: MixSpec,
    *,
    speech_spans: Sequence[tuple[float, float]] | None = None,
) -> Stems:
    """Everything of :func:`mix` before the sum: exposed so ducking can be checked alone."""
    if not spec.total_s > 0:
        raise ValueError(f"the video must last more than 0 s, got {spec.total_s}")
    if spec.narration_offset_s < 0:
        raise ValueError(f"narration offset must be >= 0, got {spec.narration_offset_s}")
    n = _samples(spec.total_s)
    placed = (
        np.zeros(n, dtype=np.float32)
        if narration is None
        else _place_narration(narration, narration_rate, spec, n)
    )
    if speech_spans is not None:
        speech = _spans_mask(speech_spans, n)
    elif narration is not None:
        speech = detect_speech(placed)
    else:
        speech = np.zeros(n, dtype=np.bool_)
    if music is None:
        return Stems(placed, np.zeros((n, 2), dtype=np.float32), speech)
    duck = duck_amount(_bridge(speech, _samples(BRIDGE_S)), spec.attack_s, spec.release_s)
    gain = 10 ** ((spec.music_gain_db + spec.duck_db * duck) / 20)
    gain *= _fades(n, spec.fade_in_s, spec.fade_out_s)
    ducked = (_fit_music(music, music_rate, n) * gain[:, None]).astype(np.float32)
    return Stems(placed, ducked, speech)


# --- Loudness and peaks --------------------------------------------------------------------


def _measure(samples: Float32Array) -> tuple[float, FloatArray]:
    """(BS.1770-4 integrated LUFS, K-weighted energy of each gating block) from pyloudnorm."""
    meter = pyloudnorm.Meter(RATE)
    if len(samples) < meter.block_size * RATE or not np.any(samples):
        return SILENCE_LUFS, np.zeros(0)
    with np.errstate(divide="ignore", invalid="ignore"):  # all-gated input logs zero
        lufs = float(meter.integrated_loudness(samples.astype(np.float64)))
    blocks = 10 ** ((np.asarray(meter.blockwise_loudness, dtype=np.float64) + 0.691) / 10)
    return (lufs if math.isfinite(lufs) and lufs > SILENCE_LUFS else SILENCE_LUFS), blocks


def integrated_lufs(samples: Float32Array) -> float:
    """BS.1770-4 integrated loudness (pyloudnorm); SILENCE_LUFS when nothing passes the gates."""
    return _measure(samples)[0]


def _gated_lufs(block_energy: FloatArray) -> float:
    """BS.1770-4 gating (absolute -70 LUFS, then relative -10 LU) over block energies."""
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(block_energy)
    kept = block_energy[loudness >= SILENCE_LUFS]
    if not kept.size:
        return SILENCE_LUFS
    relative = -0.691 + 10 * math.log10(float(kept.mean())) - 10.0
    kept = block_energy[(loudness > SILENCE_LUFS) & (loudness > relative)]
    return -0.691 + 10 * math.log10(float(kept.mean())) if kept.size else SILENCE_LUFS


class _LoudnessModel:
    """Predicts the mix's integrated loudness under a gain curve, without filtering again.

    pyloudnorm gives the K-weighted energy of each 400 ms gating block of the mix. A gain curve
    scales each block by the power-weighted mean of its squared gain; gating then runs on the
    scaled blocks. Measured against pyloudnorm on limited speech and music the prediction is
    within 0.07 LU, at a fraction of the cost, so the gain is solved on the model and then
    checked once for real.
    """

    def __init__(self, mixed: Float32Array, block_energy: FloatArray) -> None:
        self.block_energy = block_energy
        self.power = np.square(mixed[:, 0], dtype=np.float64) + np.square(
            mixed[:, 1], dtype=np.float64
        )
        hop, size = round(RATE * _BLOCK_S * (1 - _BLOCK_OVERLAP)), round(RATE * _BLOCK_S)
        self.starts = np.arange(len(block_energy)) * hop
        self.ends = np.minimum(self.starts + size, len(mixed))
        self.base = np.maximum(self._block_sums(self.power), 1e-30)

    def _block_sums(self, x: FloatArray) -> FloatArray:
        total = np.concatenate(([0.0], np.cumsum(x)))
        sums: FloatArray = total[self.ends] - total[self.starts]
        return sums

    def predict(self, curve_db: FloatArray) -> float:
        factor = self._block_sums(self.power * 10 ** (curve_db / 10)) / self.base
        return _gated_lufs(self.block_energy * factor)


def _max_columns(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # Elementwise maxima of columns: numpy's reduce along a short axis is ~10x slower.
    out: npt.NDArray[np.float32] = x[:, 0].copy()
    for col in range(1, x.shape[1]):
        np.maximum(out, x[:, col], out=out)
    return out


def _true_peak_per_sample(samples: Float32Array) -> FloatArray:
    """|x| per output sample: max over the 4x oversampled points after it and both channels."""
    m = len(samples)
    up = soxr.resample(samples, RATE, RATE * _OVERSAMPLE, quality="HQ")
    up = _max_columns(np.abs(up, out=up))
    up = np.pad(up, (0, max(m * _OVERSAMPLE - len(up), 0)))[: m * _OVERSAMPLE]
    peak = _max_columns(up.reshape(m, _OVERSAMPLE))
    # The inter-sample peak between i and i+1 is bent by the gain on both: count it on both.
    np.maximum(peak[1:], peak[:-1].copy(), out=peak[1:])
    out: FloatArray = np.maximum(peak, _max_columns(np.abs(samples))).astype(np.float64)
    return out


def true_peak_db(samples: Float32Array) -> float:
    """4x oversampled peak (a true-peak estimate) in dBFS; -inf for silence."""
    peak = float(_true_peak_per_sample(samples).max()) if len(samples) else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf


def _peak_db(samples: Float32Array) -> FloatArray:
    peak_db: FloatArray = 20 * np.log10(np.maximum(_true_peak_per_sample(samples), 1e-12))
    return peak_db


def _ramped(need: FloatArray) -> FloatArray:
    """The largest curve under ``need`` (dB, <= 0) that falls and rises no faster than allowed.

    G[i] = min over k of need[k] + slope * |i - k|, with the attack slope before a peak
    (look-ahead) and the release slope after it; both halves are running minima, so it is
    vectorized: no per-sample Python loop.
    """
    idx = np.arange(len(need), dtype=np.float64)
    attack, release = _LIMIT_ATTACK_DB_PER_S / RATE, _LIMIT_RELEASE_DB_PER_S / RATE
    after = release * idx + np.minimum.accumulate(need - release * idx)
    before = np.minimum.accumulate((need + attack * idx)[::-1])[::-1] - attack * idx
    curve: FloatArray = np.minimum(np.minimum(after, before), 0.0)
    return curve


def _gain_curve_db(peak_db: FloatArray, gain_db: float, ceiling_db: float) -> FloatArray:
    """Static ``gain_db`` plus the look-ahead limiter that holds the peaks at ``ceiling_db``.

    Few samples need limiting, so the curve is solved only around them: each cluster of
    limited samples on a window as wide as its ramps can reach (clusters whose ramps could
    meet are merged), which is exact and keeps the solver cheap enough to call repeatedly.
    """
    need = ceiling_db - gain_db - peak_db
    curve = np.full(len(need), gain_db, dtype=np.float64)
    hits = np.flatnonzero(need < 0)
    if not hits.size:
        return curve
    depth = -float(need[hits].min())
    ahead = math.ceil(depth * RATE / _LIMIT_ATTACK_DB_PER_S)
    behind = math.ceil(depth * RATE / _LIMIT_RELEASE_DB_PER_S)
    breaks = np.flatnonzero(np.diff(hits) > ahead + behind)
    firsts = np.concatenate(([hits[0]], hits[breaks + 1]))
    lasts = np.concatenate((hits[breaks], [hits[-1]]))
    for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
        lo, hi = max(first - ahead, 0), min(last + behind + 1, len(need))
        curve[lo:hi] += _ramped(np.minimum(need[lo:hi], 0.0))
    return curve


def _apply_db(samples: Float32Array, curve_db: FloatArray) -> Float32Array:
    out: Float32Array = (samples * (10 ** (curve_db / 20))[:, None]).astype(np.float32)
    return out


def limit(samples: Float32Array, ceiling_db: float) -> Float32Array:
    """``samples`` with their true peak held at ``ceiling_db`` by the look-ahead limiter."""
    return _apply_db(samples, _gain_curve_db(_peak_db(samples), 0.0, ceiling_db))


def _as_written(samples: Float32Array) -> Float32Array:
    """The samples exactly as the 16-bit file will hold them, so measurements are the file's."""
    written: Float32Array = float_to_int16(samples).astype(np.float32) / np.float32(32768.0)
    return written


@dataclass(frozen=True)
class _Normalized:
    samples: Float32Array  # already quantized to 16 bits
    lufs: float
    peak_db: float


def _solve_gain(
    loudness: Callable[[float], float], gain_db: float, target: float, most_db: float
) -> float:
    """The static gain whose (limited) loudness hits ``target``: secant steps from ``gain_db``.

    Loudness grows with gain, but slower once the limiter works (a dB of gain may buy a third
    of a LU on peaky speech); the slope is measured and kept within [0.05, 1]. The gain stays
    at or under ``most_db``: past that the limiter would squash the mix rather than raise it.
    """
    lufs, slope = loudness(gain_db), 1.0
    for _ in range(_SOLVE_STEPS):
        if abs(target - lufs) < _MODEL_TOLERANCE_LU:
            break
        step = float(np.clip((target - lufs) / slope, -_MAX_STEP_DB, most_db - gain_db))
        if step == 0:
            break
        new_gain = gain_db + step
        new_lufs = loudness(new_gain)
        slope = float(np.clip((new_lufs - lufs) / step, 0.05, 1.0))
        gain_db, lufs = new_gain, new_lufs
    return gain_db


def _normalize(mixed: Float32Array, spec: MixSpec) -> _Normalized:
    measured, blocks = _measure(mixed)
    ceiling = spec.true_peak_db - _LIMIT_MARGIN_DB
    if measured <= SILENCE_LUFS:
        # Silence stays silence; a clip too short to measure still gets its peaks held.
        out = _as_written(limit(mixed, ceiling))
        return _Normalized(out, integrated_lufs(out), true_peak_db(out))
    peak_db = _peak_db(mixed)  # oversampled peaks scale with the gain: find them once
    model = _LoudnessModel(mixed, blocks)
    offset = measured - model.predict(np.zeros(len(mixed)))  # ~0; removes any model bias

    def predicted(gain_db: float) -> float:
        return model.predict(_gain_curve_db(peak_db, gain_db, ceiling)) + offset

    gain_db = spec.target_lufs - measured
    most_db = gain_db + _MOST_LIMITING_DB
    for _ in range(_LOUDNESS_PASSES):  # the model is close; a real measurement decides
        gain_db = _solve_gain(predicted, gain_db, spec.target_lufs, most_db)
        out = _as_written(_apply_db(mixed, _gain_curve_db(peak_db, gain_db, ceiling)))
        lufs = integrated_lufs(out)
        if abs(spec.target_lufs - lufs) < _LOUDNESS_TOLERANCE_LU:
            break
        offset += lufs - predicted(gain_db)  # recalibrate the model on the real figure
    peak = true_peak_db(out)
    if peak > spec.true_peak_db:
        # The gain curve bends waveforms a little; a final trim guarantees the ceiling.
        out = _as_written(out * np.float32(10 ** ((spec.true_peak_db - peak - 0.02) / 20)))
        lufs, peak = integrated_lufs(out), true_peak_db(out)
    return _Normalized(out, lufs, peak)


# --- The mix -------------------------------------------------------------------------------


def _rms(x: npt.NDArray[np.float32] | FloatArray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _speech_to_music_db(stems: Stems) -> float:
    speech_rms = _rms(stems.narration[stems.speech])
    music_rms = _rms((stems.music[:, 0] + stems.music[:, 1])[stems.speech] * 0.5)
    if speech_rms == 0:
        return -math.inf
    if music_rms == 0:
        return math.inf
    return 20 * math.log10(speech_rms / music_rms)


def mix(
    narration: Float32Array | None,
    narration_rate: int,
    music: Float32Array | None,
    music_rate: int,
    spec: MixSpec,
    out: Path,
    *,
    speech_spans: Sequence[tuple[float, float]] | None = None,
) -> MixReport:
    """Mix, normalize and write the soundtrack to ``out`` (16-bit 48 kHz stereo WAV).

    ``narration`` is mono float32 at ``narration_rate``; ``music`` mono or stereo at
    ``music_rate``; either may be None. ``speech_spans`` are seconds on the video's timeline;
    without them speech is found from the narration's level. Raises ValueError when the
    narration does not fit in the video.
    """
    stems = render_stems(
        narration, narration_rate, music, music_rate, spec, speech_spans=speech_spans
    )
    mixed = (stems.music + stems.narration[:, None]).astype(np.float32)
    final = _normalize(mixed, spec)
    write_wav_atomic(out, final.samples, RATE)
    return MixReport(
        path=out,
        duration_s=len(final.samples) / RATE,
        integrated_lufs=final.lufs,
        peak_db=final.peak_db,
        speech_to_music_db=_speech_to_music_db(stems),
    )
