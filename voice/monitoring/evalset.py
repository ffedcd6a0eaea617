"""Small sets of spoken user turns made by the project: Piper speaks known sentences.

``SENTENCES`` (ten clean clips) drive ``bench/voice_latency.py``; ``BUNDLED`` is the default
set of ``castwork eval``: the same ten, four with numbers, money, times and abbreviations (what
a text normalizer must get right), and four spoken over pink noise at 5-10 dB SNR (where
small ASR models start to differ). Clips are synthesised once into ``<data_dir>`` (16 kHz WAV +
the reference text beside it), so nothing binary is committed and anyone can rebuild them.
A user's own set is just a folder of WAV files with a ``.txt`` of the same name each.
"""

from __future__ import annotations

import hashlib
import json
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.files import write_atomic
from voice import audio as pcm
from voice.engines.contracts import Synthesizer

SENTENCES = (
    "What time does the store open tomorrow?",
    "Can you tell me a short joke about cats?",
    "I would like to book a table for two at seven.",
    "How is the weather going to be this weekend?",
    "Please remind me to call my sister tonight.",
    "What is the capital of France?",
    "My order has not arrived yet, can you check it?",
    "Recommend a good book for a long flight.",
    "How many minutes should I boil an egg?",
    "Thanks, that was really helpful.",
)


# ``castwork eval --language ko``: ten Korean turns, four with numbers, money and times.
# Spoken by espeak-ng's Korean voice (the only Korean voice with shipped weights): robotic
# speech, so its figures say how the pipeline copes, not how it hears people.
KOREAN = (
    "내일 아침 날씨 어때요?",
    "가까운 편의점이 어디에 있나요?",
    "오늘 저녁에 두 명 예약할 수 있을까요?",
    "주문한 물건이 아직 도착하지 않았어요.",
    "고양이에 대한 짧은 농담 하나 해 주세요.",
    "이 신발은 25,000원입니다.",
    "배송은 3일 걸립니다.",
    "회의는 오후 2시 30분에 시작합니다.",
    "전화번호는 010 1234 5678입니다.",
    "정말 고마워요. 큰 도움이 됐어요.",
)


@dataclass(frozen=True)
class Prompt:
    text: str
    snr_db: float | None = None  # spoken over pink noise at this signal-to-noise ratio

    @property
    def tag(self) -> str:
        return hashlib.sha256(f"{self.text}|{self.snr_db}".encode()).hexdigest()[:8]


BUNDLED: tuple[Prompt, ...] = (
    *(Prompt(s) for s in SENTENCES),
    Prompt("It costs $25 and ships in 3 days."),
    Prompt("Can Dr. Brown see me at 4:30 on Friday?"),
    Prompt("I need 2 tickets for the 10 o'clock show."),
    Prompt("Is Mr. Lee's shop open until 9 p.m. tonight?"),
    Prompt(SENTENCES[0], snr_db=10),
    Prompt(SENTENCES[2], snr_db=5),
    Prompt(SENTENCES[6], snr_db=10),
    Prompt(SENTENCES[8], snr_db=5),
)


def pink_noise(n: int, seed: int) -> pcm.Float32Array:
    """Unit-RMS noise with a 1/f power spectrum (shaped in the frequency domain)."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(f), n)
    out: pcm.Float32Array = (noise / (np.sqrt(np.mean(noise**2)) + 1e-12)).astype(np.float32)
    return out


def with_noise(speech: pcm.Float32Array, snr_db: float, seed: int) -> pcm.Float32Array:
    """Speech plus pink noise at ``snr_db`` (speech power measured where it is voiced)."""
    voiced = speech[np.abs(speech) > 0.01 * float(np.max(np.abs(speech)) or 1.0)]
    power = float(np.mean(voiced**2)) if len(voiced) else 0.0
    noise = pink_noise(len(speech), seed) * np.sqrt(power / 10 ** (snr_db / 10))
    mixed = speech + noise
    peak = float(np.max(np.abs(mixed)) or 1.0)
    out: pcm.Float32Array = (mixed / peak * 0.9 if peak > 0.9 else mixed).astype(np.float32)
    return out


@dataclass(frozen=True)
class Clip:
    path: Path
    text: str

    def audio(self) -> pcm.Float32Array:
        samples, rate = pcm.read_wav(self.path)
        return pcm.resample(samples, rate, pcm.INTERNAL_RATE)


def build(
    tts: Synthesizer,
    directory: Path,
    sentences: tuple[str | Prompt, ...] = SENTENCES,
) -> list[Clip]:
    """Synthesise the clips that are missing (atomically) and return the whole set.

    File names carry a hash of text and condition, so a changed prompt is rebuilt, and
    clips of prompts no longer in the set are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, item in enumerate(sentences):
        prompt = item if isinstance(item, Prompt) else Prompt(item)
        path = directory / f"{i:02d}-{prompt.tag}.wav"
        if not path.is_file():
            speech = pcm.resample(
                pcm.concat(list(tts.synthesize(prompt.text))), tts.sample_rate, 16_000
            )
            audio = np.concatenate([np.zeros(3200, np.float32), speech])
            if prompt.snr_db is not None:
                audio = with_noise(audio, prompt.snr_db, seed=i)
            path.with_suffix(".txt").write_text(prompt.text + "\n")
            write_atomic(path, pcm.wav_bytes(audio, 16_000))
        clips.append(Clip(path, prompt.text))
    keep = {c.path.name for c in clips} | {c.path.with_suffix(".txt").name for c in clips}
    for stale in [*directory.glob("*.wav"), *directory.glob("*.txt")]:
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    (directory / "set.json").write_text(
        json.dumps([{"wav": c.path.name, "text": c.text} for c in clips], indent=1)
    )
    return clips


def load(directory: Path) -> list[Clip]:
    """A set on disk: WAV files, each with a .txt of the same name holding the reference."""
    if not directory.is_dir():
        raise FileNotFoundError(f"no such folder: {directory}")
    clips = []
    for wav in sorted(directory.glob("*.wav")):
        reference = wav.with_suffix(".txt")
        if not reference.is_file():
            raise FileNotFoundError(f"{wav.name}: no reference text ({reference.name}) beside it")
        clip = Clip(wav, reference.read_text(encoding="utf-8").strip())
        try:  # checked now: a bad file must not stop a run after the models loaded
            samples = clip.audio()
        except (wave.Error, EOFError, ValueError) as exc:
            raise ValueError(f"{wav.name}: not a usable 16-bit PCM WAV ({exc})") from None
        if len(samples) < pcm.INTERNAL_RATE // 10:
            raise ValueError(f"{wav.name}: shorter than 0.1 s")
        clips.append(clip)
    if not clips:
        raise FileNotFoundError(f"no .wav clips in {directory}")
    return clips
