"""Does a denoiser in front of the ASR lower the WER? RNNoise against no denoising, side by side.

`audio.input.noise_reduction` is accepted by the server and not applied: it would be honoured
with a real denoiser only if that measurably lowered the WER. This bench measures it: the
eval set's sentences spoken by Piper, clean and over pink noise at 10, 5 and 0 dB SNR (the
eval set's noise), transcribed by the default ASR (Whisper tiny.en) as they are and after
RNNoise (the ``pyrnnoise`` wheel's library, driven through ctypes: 48 kHz frames of 480
samples, resampled from and back to 16 kHz). Printed per condition: WER both ways and the
denoiser's cost per clip. Nothing here is tuned, so there is no held-out split.

RNNoise is not a dependency of Castwork (it is not used); install it for this bench only:

    .venv/bin/pip install --no-deps pyrnnoise==0.4.5
    .venv/bin/python bench/noise_reduction.py
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr

from voice.audio import Float32Array
from voice.engines.factory import build_asr, build_tts
from voice.monitoring.evalset import SENTENCES, Prompt, build
from voice.monitoring.textnorm import corpus_errors
from voice.settings import VoiceSettings

SNRS: tuple[float | None, ...] = (None, 10, 5, 0)


def _rnnoise() -> Callable[[Float32Array], Float32Array]:
    spec = importlib.util.find_spec("pyrnnoise")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pyrnnoise is not installed: .venv/bin/pip install --no-deps pyrnnoise==0.4.5")
    lib = ctypes.CDLL(str(Path(spec.submodule_search_locations[0]) / "librnnoise.so"))
    lib.rnnoise_create.argtypes = [ctypes.c_void_p]
    lib.rnnoise_create.restype = ctypes.c_void_p
    lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
    floats = ctypes.POINTER(ctypes.c_float)
    lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
    lib.rnnoise_process_frame.restype = ctypes.c_float
    size = int(lib.rnnoise_get_frame_size())

    def denoise(audio: Float32Array) -> Float32Array:
        state = lib.rnnoise_create(None)
        try:
            # RNNoise works on 48 kHz samples in the 16-bit range.
            x = soxr.resample(audio, 16_000, 48_000).astype(np.float32) * 32768.0
            n = len(x) // size * size
            out = np.empty(n, np.float32)
            for i in range(0, n, size):
                frame = np.ascontiguousarray(x[i : i + size])
                clean = np.empty(size, np.float32)
                lib.rnnoise_process_frame(
                    state, clean.ctypes.data_as(floats), frame.ctypes.data_as(floats)
                )
                out[i : i + size] = clean
        finally:
            lib.rnnoise_destroy(state)
        result: Float32Array = soxr.resample(out / 32768.0, 48_000, 16_000).astype(np.float32)
        return result

    return denoise


def main() -> None:
    denoise = _rnnoise()
    settings = VoiceSettings()
    prompts = tuple(Prompt(text, snr_db=snr) for snr in SNRS for text in SENTENCES)
    asr = build_asr(settings)
    arms: dict[str, Callable[[Float32Array], Float32Array]] = {
        "as is": lambda a: a,
        "rnnoise": denoise,
    }
    with tempfile.TemporaryDirectory(prefix="castwork-noise-") as tmp:
        clips = build(build_tts(settings), Path(tmp), prompts)
        print(
            f"{'condition':12} {'clips':>5} {'WER as is':>10} {'WER rnnoise':>12} {'denoise':>10}"
        )
        for snr in SNRS:
            chosen = [c for p, c in zip(prompts, clips, strict=True) if p.snr_db == snr]
            wer: dict[str, float] = {}
            spent = 0.0
            for name, arm in arms.items():
                pairs = []
                for clip in chosen:
                    start = time.perf_counter()
                    audio = arm(clip.audio())
                    if name == "rnnoise":
                        spent += time.perf_counter() - start
                    pairs.append((clip.text, asr.transcribe(audio).text))
                e = corpus_errors(pairs, "en")
                wer[name] = (e.substitutions + e.deletions + e.insertions) / e.reference_words
            label = "clean" if snr is None else f"{snr:g} dB SNR"
            print(
                f"{label:12} {len(chosen):5} {wer['as is']:10.3f} {wer['rnnoise']:12.3f}"
                f" {spent / len(chosen) * 1000:7.0f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
