"""The voice agent's settings sections, and :class:`VoiceSettings`: what a voice process reads.

Model fields take either a built-in name (see :mod:`voice.engines.contracts.registry`) or a local path; a
path that does not exist is refused here, so a typo fails at start-up, not in the first turn.
The whole deployment's settings (``workers.settings.Settings``) extend these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, HttpUrl, SecretStr, field_validator, model_validator

from base.redact import mask_url
from base.settings import Seconds, Section, SettingsBase
from voice.engines.contracts import TOOL_NAME, check_parameters
from voice.engines.registry import BUILTIN_ASR, BUILTIN_LLM, BUILTIN_TTS, BUILTIN_VAD

Millis = Annotated[int, Field(ge=0, le=10_000)]


def _model_ref(value: str, builtins: tuple[str, ...]) -> str:
    """A model reference is a built-in name or an existing local path."""
    if value in builtins:
        return value
    if not Path(value).expanduser().exists():
        raise ValueError(
            f"{value!r} is neither a built-in model ({', '.join(builtins)}) nor an existing path"
        )
    return str(Path(value).expanduser())


class RemoteBackend(Section):
    """One entry of an ASR or TTS chain (``asr.backends``, ``tts.backends``): the section's own
    built-in engine (kind ``builtin``), or an OpenAI-compatible server (kind ``openai``)."""

    kind: Literal["builtin", "openai"] = "builtin"
    name: str = ""
    url: HttpUrl | None = None
    # openai: the model name the server expects; tts: the voice it should speak in.
    model: str = ""
    voice: str = "alloy"
    api_key: SecretStr | None = None
    timeout_s: Seconds = 10.0

    @model_validator(mode="after")
    def _check(self) -> RemoteBackend:
        if self.kind == "openai" and (self.url is None or not self.model):
            raise ValueError("an 'openai' backend needs a url and a model")
        return self

    def label(self, builtin: str) -> str:
        if self.kind == "builtin":
            return builtin
        return self.name or f"openai:{self.model}@{mask_url(str(self.url))}"


# At most a primary and its fallback: what a turn tries before it says sorry.
Chain = Annotated[list[RemoteBackend], Field(max_length=2)]


class AsrSettings(Section):
    model: str = "tiny.en"
    fallback_model: str | None = "base"
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    compute_type: str = "int8"
    beam_size: Annotated[int, Field(ge=1, le=10)] = 1
    cpu_threads: Annotated[int, Field(ge=0, le=256)] = 2
    language: str | None = "en"
    # Encode turns shorter than 30 s in a window that fits them (at least this long; the
    # speech plus 2 s), decoding again on the full 30 s window when the result looks looped:
    # tiny.en's encoder ~410 -> ~60-120 ms on 2 cores. 0: always the 30 s window.
    min_window_s: Annotated[float, Field(ge=0, le=30)] = 8.0
    # Whisper's temperature fallback (a decode that looks looped or unsure is tried again,
    # hotter): each try is a whole decode. And a bound on a turn's tokens per second of audio
    # in the full-window decode (0: Whisper's own 448 per window). Korean sets [0.0] and 15:
    # on the Korean set its looping decodes took 12-15 s of fallbacks that did not help
    # (CER 0.97 -> 0.84, ASR P50 1.7 s -> 0.23 s, max 14.6 -> 1.0 s).
    temperatures: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=1)] = [
        0.0, 0.2, 0.4, 0.6, 0.8, 1.0,
    ]  # fmt: skip
    max_tokens_per_s: Annotated[float, Field(ge=0, le=100)] = 0.0
    # Hallucination guard: a segment this likely to be silence, or this unsure, is dropped.
    no_speech_threshold: Annotated[float, Field(ge=0, le=1)] = 0.6
    min_avg_logprob: Annotated[float, Field(le=0)] = -1.0
    # The chain a turn is transcribed by, in order; empty: ``model``, then ``fallback_model``.
    # E.g. [{kind = "openai", url = "http://models:8800/v1", model = "whisper"}, {}] (a remote
    # server, then the built-in ``model`` when it fails).
    backends: Chain = []

    @field_validator("model")
    @classmethod
    def _check_model(cls, v: str) -> str:
        return _model_ref(v, BUILTIN_ASR)

    @field_validator("fallback_model")
    @classmethod
    def _check_fallback(cls, v: str | None) -> str | None:
        return None if v in (None, "", "none") else _model_ref(v, BUILTIN_ASR)


class LlmBackend(Section):
    """One entry of the LLM fallback chain."""

    kind: Literal["gguf", "openai"] = "gguf"
    name: str = ""
    # gguf: a built-in name or a .gguf path; openai: the model name the server expects.
    model: str = "smollm2-135m"
    url: HttpUrl | None = None
    api_key: SecretStr | None = None
    # One thread: llama.cpp's spinning thread pool collapses (first token 3 s instead of 30 ms)
    # when Whisper or Piper hold the other core; at 135M parameters one core is plenty.
    n_threads: Annotated[int, Field(ge=1, le=256)] = 1
    # Prompt evaluation is one big batch: two threads halve it on an idle machine (180 -> 110 ms
    # here), but when another process holds a core (an ad render under `castwork serve`, a
    # benchmark) the second thread's spin-wait made the first token take 2.2 s instead of 0.3 s.
    # One thread is the safe default on a shared 2-core box; raise it on a dedicated one.
    n_threads_batch: Annotated[int, Field(ge=1, le=256)] = 1
    # Answers generated at once (gguf: one llama.cpp context each, ~100 MB for the default).
    # A caller can have two in flight (the speculative one started in a pause, and the one at
    # the endpoint), and a context is held until its prompt is read even when the answer is
    # dropped: with two contexts for two callers, histories were re-read turn after turn and
    # the first token passed its timeout by the eighth turn. 4 held the 4 callers of
    # voice.max_sessions in bench/voice_load.py (2026-12-07, P95 within 2 s); where callers
    # speculate more, or max_sessions is raised, give it up to 2 x voice.max_sessions
    # (~100 MB a context).
    parallel: Annotated[int, Field(ge=1, le=64)] = 4
    context_tokens: Annotated[int, Field(ge=256, le=131_072)] = 2048

    @model_validator(mode="after")
    def _check(self) -> LlmBackend:
        if self.kind == "gguf":
            _model_ref(self.model, BUILTIN_LLM)
        elif self.url is None:
            raise ValueError("an 'openai' backend needs a url (e.g. http://127.0.0.1:8000/v1)")
        return self

    @property
    def label(self) -> str:
        return self.name or f"{self.kind}:{Path(self.model).name}"


class LlmSettings(Section):
    backends: Annotated[list[LlmBackend], Field(min_length=1)] = [LlmBackend()]
    first_token_timeout_s: Seconds = 2.5
    total_timeout_s: Seconds = 20.0
    # Spoken answers should be short; SmolLM2 ignores "be brief" otherwise.
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 60
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.3
    # Past conversation sent with each turn, in characters (~4 per token). Without a bound a
    # long call slows every turn (a 12-turn call's prompt took the first token from 200 to 380
    # ms with two callers) and finally overflows the model's context. Oldest items go in blocks,
    # down to half this, so the cached prompt prefix survives most turns.
    history_chars: Annotated[int, Field(ge=0, le=1_000_000)] = 2400
    instructions: str = (
        "You are Castwork, a friendly voice assistant. Answer in one or two short, "
        "plain sentences that sound natural when spoken."
    )
    # What is said without the model: when no answer can be made, and after a long silence.
    apology: Annotated[str, Field(min_length=1, max_length=300)] = (
        "Sorry, I'm having trouble answering right now. Please try again in a moment."
    )
    still_there: Annotated[str, Field(min_length=1, max_length=300)] = "Are you still there?"


class TtsSettings(Section):
    engine: Literal["piper", "espeak"] = "piper"
    voice: str = "joe"
    fallback: Literal["espeak", "none"] = "espeak"
    espeak_voice: str = "en-us"
    length_scale: Annotated[float, Field(gt=0.25, le=4)] = 1.0
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    # The first piece of an answer is cut at its first clause boundary once it holds
    # first_piece_min_chars, and at a word boundary past first_piece_max_chars (not after a
    # word that leads on, "for", "the"): the caller hears nothing until it is synthesised,
    # and Piper's time grows with its length (40 ms for 5 characters, 190 ms for 52).
    # bench/voice_latency.py, 1 session, two runs each: 12/60 P50 836-1054 ms, 8/32
    # 793-819, 8/24 677-696 (README).
    first_piece_min_chars: Annotated[int, Field(ge=1, le=200)] = 8
    first_piece_max_chars: Annotated[int, Field(ge=8, le=400)] = 24
    # The chain answers are spoken by, in order; empty: ``engine``, then ``fallback``.
    backends: Chain = []

    @model_validator(mode="after")
    def _check(self) -> TtsSettings:
        if self.engine == "piper":
            _model_ref(self.voice, BUILTIN_TTS)
        return self


class VadSettings(Section):
    model: str = "silero"
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.5
    prefix_padding_ms: Millis = 300
    silence_duration_ms: Annotated[int, Field(ge=100, le=10_000)] = 500
    # Castwork's own knobs: start a speculative decode this far into a pause, and try a
    # partial transcript this often while the user speaks (0: never).
    speculative_after_ms: Annotated[int, Field(ge=32, le=10_000)] = 160
    partial_every_ms: Annotated[int, Field(ge=0, le=60_000)] = 1200
    # The turn detection a session starts with (a client may change it by session.update):
    # server_vad ends a turn after silence_duration_ms of silence; semantic_vad judges each
    # pause at speculative_after_ms with the end-of-turn model (turn_model) and the transcript
    # so far, and waits up to the eagerness's limit when they say the speaker goes on
    # (voice.core.turntaking; bench/turn_taking.py measures both).
    # server_vad is the default: on the eval set it answers sooner (its 500 ms wait hides the
    # LLM behind the prefetched response) and semantic_vad cut in on comma pauses; semantic_vad
    # cuts in far less on long mid-sentence pauses (README, Turn-taking).
    turn_detection: Literal["server_vad", "semantic_vad"] = "server_vad"
    # Speech over the agent's answer interrupts it once this much of it is speech, or sooner
    # when its transcript is not a backchannel ("uh-huh", "okay"); 0: any speech at once.
    barge_in_min_ms: Annotated[int, Field(ge=0, le=5000)] = 1000
    # Whether that speech's decode reads fillers first ("Mm-hmm. Uh-huh.", per language: see
    # voice/core/turntaking.py), so a hum is written as one, not as words. Off: in
    # bench/barge_in.py it cancelled no fewer answers and made some barge-ins ~0.7 s slower.
    backchannel_prompt: bool = False
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    # Smart Turn v3.2 from the pipecat-ai wheel, or a path to an ONNX file with its
    # interface; "" for none (semantic_vad then judges by the transcript alone).
    turn_model: str = "smart-turn-v3.2"
    # semantic_vad's third signal: a small language model reads the pause's transcript and
    # says how likely the message ends there (voice/engines/text_turn.py). An embedded LLM
    # ("smollm2-135m", "qwen2.5-0.5b") or a path to a ChatML GGUF; "" for none. Off by
    # default: with "smollm2-135m", bench/turn_taking.py measured 2 cut-ins in 20 on 700 ms
    # pauses instead of 7, but every pause waits for the words (and more turns for the longest
    # wait): the endpoint delay's P50 went from ~330 to 660-810 ms (README, Turn-taking).
    text_turn_model: str = ""

    @field_validator("model")
    @classmethod
    def _check_model(cls, v: str) -> str:
        return _model_ref(v, BUILTIN_VAD)


class VoiceServerSettings(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8765
    # Required from clients unless the server binds only to loopback.
    api_keys: list[SecretStr] = []
    # Capacity of the embedded models on 2 cores (bench/voice_load.py, threshold P95 2 s):
    # 4 callers held on 2026-12-07 (P95 822, 1038, 1461, 1275 ms for 1-4 callers; 5 broke at
    # 2759 ms) once Whisper decodes in a window that fits the turn and the answer is prepared
    # in the pause; it was 2 before. Beyond it a caller is refused, not slowed down for
    # everyone. Raise it on a bigger machine or with remote models.
    max_sessions: Annotated[int, Field(ge=1, le=10_000)] = 4
    max_sessions_per_key: Annotated[int, Field(ge=1, le=10_000)] = 2
    session_max_s: Seconds = 1800.0
    idle_timeout_s: Seconds = 120.0
    # A client whose socket takes nothing for this long (its outgoing queue full) is dropped:
    # a caller that never reads must not hold the server's memory or its turn forever.
    send_timeout_s: Seconds = 10.0
    # On SIGTERM (or castwork serve stopping) the server drains: it stops taking sessions
    # (/readyz and new connections answer 503), lets open ones finish for up to this long,
    # then closes the rest with 1012 ("service restart": reconnect). A second signal ends the
    # wait at once.
    drain_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    # Client secrets (POST /v1/realtime/client_secrets): how long one may wait to be used
    # when the request does not say (expires_after.seconds, 10 to client_secret_max_s), and
    # how many may be outstanding at once on this server (past it, minting answers 429).
    client_secret_ttl_s: Annotated[int, Field(ge=10, le=7200)] = 60
    client_secret_max_s: Annotated[int, Field(ge=10, le=7200)] = 600
    max_client_secrets: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # Where minted secrets wait: "" in this server's memory (one server), or a redis:// URL
    # that every server behind a balancer shares, so a page may mint on one and connect to
    # another (voice/runtime/shared_secrets.py).
    client_secret_store: Annotated[str, Field(pattern=r"^(rediss?://.+)?$")] = ""
    max_message_bytes: Annotated[int, Field(ge=1024, le=64 << 20)] = 1 << 20
    # Uncommitted input audio a session keeps, in seconds (kept as 16 kHz float32: 64 KB a
    # second, 7.7 MB at the default; OpenAI's limit is 15 MiB of input, ~5 min of PCM16).
    # Without turn detection, appends past it are refused (error input_audio_buffer_full)
    # until commit or clear; with server VAD a turn this long is committed there (same error)
    # and the speech that goes on is the next turn. While nobody speaks, server VAD keeps only
    # vad.prefix_padding_ms of audio.
    max_buffer_s: Annotated[float, Field(ge=1, le=3600)] = 120.0
    # Received audio, counted by its duration: at most max_audio_rate times real time, after a
    # burst of audio_burst_s (a clip uploaded at once, a client catching up after a stall).
    # Audio over it is dropped (error input_audio_rate_exceeded); a client that goes on until
    # another burst's worth was dropped is closed (1008).
    max_audio_rate: Annotated[float, Field(ge=1, le=1000)] = 4.0
    audio_burst_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # Conversation a session keeps: items, one item's text, and the text of the items the
    # model may still see (those the llm.history_chars bound let go keep only their id, and
    # are the first to go past max_items). conversation.item.create past them is refused
    # (error conversation_full or item_too_large).
    max_items: Annotated[int, Field(ge=1, le=100_000)] = 1000
    max_item_chars: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    max_conversation_chars: Annotated[int, Field(ge=1, le=100_000_000)] = 200_000
    # Web pages allowed to open sessions, besides loopback ones, as their browser names them
    # in Origin ("https://app.example.com", "http://localhost:3000"). Clients that are not
    # browsers send no Origin and are not affected.
    allowed_origins: list[
        Annotated[
            str, Field(pattern=r"^https?://([A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?/?$")
        ]
    ] = []


# Settings an experiment arm may change: the models and how turns are detected, nothing
# about the server (ports, keys, limits), so every arm runs in the same process.
ARM_SECTIONS = ("asr", "llm", "tts", "vad")


class ArmSettings(Section):
    """One named model configuration: dotted overrides of the asr/llm/tts/vad settings."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    weight: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0
    # e.g. {"asr.model" = "base"} or {"llm.backends" = [{kind = "openai", url = "...", ...}]}
    overrides: dict[str, object] = {}

    @field_validator("overrides")
    @classmethod
    def _check_overrides(cls, v: dict[str, object]) -> dict[str, object]:
        for dotted in v:
            if dotted.split(".", 1)[0] not in ARM_SECTIONS or "." not in dotted:
                raise ValueError(
                    f"{dotted!r}: an arm may override {', '.join(s + '.*' for s in ARM_SECTIONS)}"
                )
        return v


# A session's language (audio.input.transcription.language) -> the settings that serve it,
# as dotted overrides of the asr/llm/tts/vad sections (like an experiment arm's). English is
# the base settings themselves. Korean by default: Whisper base in Korean, espeak-ng's Korean
# voice (no neural Korean voice ships its weights), Korean instructions and phrases. The
# embedded SmolLM2 writes no Korean: give "llm.backends" a model that does (the opt-in
# qwen2.5-0.5b, or an OpenAI-compatible server) for answers worth hearing.
KOREAN: dict[str, object] = {
    "asr.model": "base",
    "asr.fallback_model": None,
    "asr.language": "ko",
    "asr.temperatures": [0.0],
    "asr.max_tokens_per_s": 15.0,
    "tts.engine": "espeak",
    "tts.espeak_voice": "ko",
    "tts.fallback": "none",
    # SmolLM2 reads English only: a Korean pause is judged by the sound and the last word.
    "vad.text_turn_model": "",
    "llm.instructions": (
        "당신은 친절한 음성 비서 Castwork입니다. 항상 한국어로, 말하기 자연스러운 짧은 "
        "한두 문장으로 대답하세요."
    ),
    "llm.apology": "죄송합니다. 지금은 대답하기 어렵습니다. 잠시 후에 다시 말씀해 주세요.",
    "llm.still_there": "아직 계신가요?",
}


def _check_languages(v: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    for language, overrides in v.items():
        if language == "en":
            raise ValueError("'en': English is the base settings; configure those instead")
        for dotted in overrides:
            if dotted.split(".", 1)[0] not in ARM_SECTIONS or "." not in dotted:
                raise ValueError(
                    f"{language}: {dotted!r}: a language may override "
                    f"{', '.join(s + '.*' for s in ARM_SECTIONS)}"
                )
    return v


Languages = Annotated[
    dict[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")], dict[str, object]],
    AfterValidator(_check_languages),
]


class ExperimentSettings(Section):
    """A/B experiment: sessions split between named arms. No arms: no experiment."""

    arms: list[ArmSettings] = []
    # "session": each session drawn on its own; "key": all sessions of an API key in one arm.
    split_by: Literal["session", "key"] = "session"
    # Part of the hash: a new salt reshuffles who lands where (a new experiment).
    salt: Annotated[str, Field(max_length=100)] = "castwork"

    @model_validator(mode="after")
    def _check(self) -> ExperimentSettings:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must differ (got {', '.join(names)})")
        return self


CaptureReason = Literal[
    "no_speech",
    "asr_retry",
    "asr_failed",
    "llm_fallback",
    "llm_all_failed",
    "llm_cut_short",
    "tts_fallback",
    "tts_failed",
    "barge_in",
    "abandoned",
    "slow",
]


class CaptureSettings(Section):
    """Failure-case capture (off by default): turns that needed a recovery branch or were slow
    are kept with their audio, text, record and lineage, personal data masked."""

    enabled: bool = False
    # Default <data_dir>/cases.
    dir: Path | None = None
    # A turn with any of these recovery codes is captured ("slow" is the latency threshold).
    reasons: list[CaptureReason] = list(get_args(CaptureReason))
    # "slow": voice-to-voice above this.
    slow_ms: Annotated[float, Field(gt=0, le=600_000)] = 2000.0
    # Retention: the newest max_cases, none older than max_age_days.
    max_cases: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
    max_age_days: Annotated[float, Field(gt=0, le=3650)] = 14.0
    # Cases waiting to be written; beyond it a case is dropped (and counted), never waited for.
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 64
    # Keep the audio of a case whose text held personal data (phone, e-mail, card...).
    keep_audio_with_pii: bool = False


# A function name the chat-completions API accepts.
ToolName = Annotated[str, Field(pattern=TOOL_NAME)]


class HttpToolSettings(Section):
    """A tool served by a plain HTTP endpoint: Castwork POSTs the model's arguments as a JSON
    object and hands the response body to the model as the call's output."""

    name: ToolName
    description: str = ""
    # JSON Schema of the arguments, checked before any request is sent.
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    url: HttpUrl
    headers: dict[str, SecretStr] = {}
    # None: tools.call_timeout_s.
    timeout_s: Seconds | None = None
    # A longer body fails the call (read no further): the cap bounds memory, not the output.
    max_response_bytes: Annotated[int, Field(ge=1, le=16 << 20)] = 65_536
    # Whether calling it changes something (a booking, a cancellation). Say false only for
    # pure look-ups: the turn may run those more freely.
    side_effects: bool = True

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_parameters(v)


class McpServerSettings(Section):
    """An MCP server whose tools the agent may call: a command Castwork starts and talks to
    over stdio, or a streamable HTTP endpoint. One that fails to start is logged and left out."""

    label: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    transport: Literal["stdio", "http"] = "stdio"
    # stdio: the command line (no shell) and extra environment. The server inherits only
    # PATH, HOME and such from Castwork's environment, never its keys.
    command: list[str] = []
    env: dict[str, SecretStr] = {}
    cwd: Path | None = None
    # http: the endpoint (e.g. http://127.0.0.1:8931/mcp) and headers for every request.
    url: HttpUrl | None = None
    headers: dict[str, SecretStr] = {}
    connect_timeout_s: Seconds = 20.0
    # Per call; None: tools.call_timeout_s.
    timeout_s: Seconds | None = None
    # The tools to offer, by name (None: all the server lists).
    tools: list[ToolName] | None = None
    # Tool name -> whether it has side effects, over the server's own annotation (a tool
    # without readOnlyHint = true counts as having side effects).
    side_effects: dict[ToolName, bool] = {}

    @model_validator(mode="after")
    def _check(self) -> McpServerSettings:
        stdio_only = bool(self.command or self.env or self.cwd)
        if self.transport == "stdio" and not self.command:
            raise ValueError('a stdio MCP server needs a command, e.g. ["python", "server.py"]')
        if self.transport == "stdio" and (self.url or self.headers):
            raise ValueError('url and headers are for transport = "http"')
        if self.transport == "http" and self.url is None:
            raise ValueError("an http MCP server needs a url, e.g. http://127.0.0.1:8931/mcp")
        if self.transport == "http" and stdio_only:
            raise ValueError('command, env and cwd are for transport = "stdio"')
        return self


class ToolSettings(Section):
    """Server-side tools the voice agent may call. Only these operator-configured endpoints
    and commands are ever used: nothing a client sends can name a URL or a command. Tool
    names must differ across all of them (checked at start-up, once MCP servers list theirs)."""

    http: list[HttpToolSettings] = []
    mcp: list[McpServerSettings] = []
    # Tool rounds in one turn (the model calls, the tools answer, the model reads); past it
    # the model must answer in words.
    max_rounds: Annotated[int, Field(ge=1, le=20)] = 3
    # A tool still running this long into a turn gets a short spoken filler, so the caller
    # does not sit in silence (0: no filler).
    filler_after_ms: Annotated[int, Field(ge=0, le=60_000)] = 700
    filler_text: Annotated[str, Field(max_length=200)] = "One moment."
    call_timeout_s: Seconds = 10.0
    # Characters of a tool's output the model reads; the rest is cut with a note. The
    # default local model keeps ~2400 characters of history (llm.history_chars).
    max_output_chars: Annotated[int, Field(ge=100, le=1_000_000)] = 2000

    @model_validator(mode="after")
    def _check(self) -> ToolSettings:
        for what, names in (
            ("http tool names", [t.name for t in self.http]),
            ("mcp labels", [m.label for m in self.mcp]),
        ):
            if twice := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"{what} must differ (twice: {', '.join(twice)})")
        return self


class ModelServerSettings(Section):
    """`castwork models serve`: the embedded models over OpenAI-compatible HTTP."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8800
    # Required from clients unless the server binds only to loopback.
    api_keys: list[SecretStr] = []
    # An audio upload to /v1/audio/transcriptions (OpenAI's own limit is 25 MB).
    max_audio_mb: Annotated[int, Field(ge=1, le=1000)] = 25
    # Completion tokens when a request names none.
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] = 512


class VoiceSettings(SettingsBase):
    """Everything a voice server, its engines and its tools read."""

    asr: AsrSettings = AsrSettings()
    llm: LlmSettings = LlmSettings()
    tts: TtsSettings = TtsSettings()
    vad: VadSettings = VadSettings()
    voice: VoiceServerSettings = VoiceServerSettings()
    experiment: ExperimentSettings = ExperimentSettings()
    capture: CaptureSettings = CaptureSettings()
    tools: ToolSettings = ToolSettings()
    model_server: ModelServerSettings = ModelServerSettings()
    languages: Languages = {"ko": KOREAN}

    @property
    def model_cache(self) -> Path:
        return self.data_dir / "models"

    @property
    def cases_dir(self) -> Path:
        return self.capture.dir or self.data_dir / "cases"
