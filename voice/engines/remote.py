"""ASR and TTS on any OpenAI-compatible server (`castwork models serve`, speaches, vLLM,
Kokoro-FastAPI, OpenAI): the same contracts as the built-in engines, so they take the same
places in a chain (``asr.backends``, ``tts.backends``) and fail the same way (EngineError,
with the recovery codes of the built-in ones)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from voice import audio as pcm
from voice.engines.contracts import Transcript
from voice.errors import EngineError

PCM_RATE = 24_000  # OpenAI's "pcm": 24 kHz, 16-bit little-endian, mono
_CHUNK_BYTES = 4_800  # 100 ms of it


class RemoteTranscriber:
    """``POST /v1/audio/transcriptions`` with the turn as a 16 kHz WAV."""

    def __init__(
        self,
        url: str,
        *,
        model: str,
        name: str,
        api_key: str | None = None,
        language: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        import openai

        self.name = name
        self._model, self._language = model, language
        self._client = openai.OpenAI(
            base_url=url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=0
        )

    def transcribe(
        self, audio: pcm.Float32Array, *, word_timestamps: bool = False, prompt: str | None = None
    ) -> Transcript:
        import openai

        wav = pcm.wav_bytes(audio, pcm.INTERNAL_RATE)
        try:
            result = self._client.audio.transcriptions.create(
                model=self._model,
                file=("turn.wav", wav),
                language=self._language or openai.omit,
                prompt=prompt or openai.omit,
            )
        except openai.OpenAIError as exc:
            raise EngineError(f"{self.name}: {exc}", stage="asr") from exc
        return Transcript(text=result.text.strip(), model=self.name)

    def close(self) -> None:
        self._client.close()


class RemoteSynthesizer:
    """``POST /v1/audio/speech`` for 24 kHz PCM, each chunk yielded as it arrives."""

    sample_rate = PCM_RATE

    def __init__(
        self,
        url: str,
        *,
        model: str,
        voice: str,
        name: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        import openai

        self.name = name
        self._model, self._voice = model, voice
        self._client = openai.OpenAI(
            base_url=url, api_key=api_key or "not-needed", timeout=timeout_s, max_retries=0
        )

    def synthesize(self, text: str) -> Iterator[pcm.Float32Array]:
        import httpx
        import openai

        if not text.strip():
            return
        try:
            with self._client.audio.speech.with_streaming_response.create(
                model=self._model, voice=self._voice, input=text, response_format="pcm"
            ) as response:
                rest = b""
                for data in response.iter_bytes(_CHUNK_BYTES):
                    data, rest = rest + data, b""
                    if len(data) % 2:  # a sample split between two reads
                        data, rest = data[:-1], data[-1:]
                    if data:
                        yield pcm.int16_to_float(np.frombuffer(data, dtype="<i2"))
        # httpx's own errors too: a stream cut mid-answer fails while it is read, past the SDK.
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise EngineError(f"{self.name}: {exc}", stage="tts") from exc

    def close(self) -> None:
        self._client.close()
