"""The I/O-free session core, driven purely by its inputs: no sockets, threads or models.

Audio is fed one 32 ms VAD frame at a time with a fake clock; ASR results and response ends
are fed back by request/response id. Every ``Send`` event is checked against the ``openai``
package's own server event models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from voice.audio import FRAME_SAMPLES, Float32Array
from voice.core import protocol
from voice.core.actions import (
    Action,
    CancelResponse,
    Close,
    FinishTurn,
    ReleaseResponse,
    Send,
    StartResponse,
    Transcribe,
)
from voice.core.session import (
    SORRY_DIDNT_CATCH,
    SessionConfig,
    TurnState,
    VoiceSession,
    spoken_text,
    usable,
)
from voice.engines.contracts import Transcript
from voice.testing.fakes import silence, tone

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
SPEECH_P, SILENCE_P = 0.95, 0.02
FRAME_S = 0.032
HEARD = Transcript("what time is it", no_speech_prob=0.01, avg_logprob=-0.2, model="fake-asr")


class Driver:
    """Feeds a :class:`VoiceSession` and keeps every action; validates each ``Send`` event."""

    def __init__(self, session: VoiceSession | None = None, **config: Any) -> None:
        self.session = session or VoiceSession(
            "sess_test", SessionConfig(instructions="Be helpful.", voice="joe", **config)
        )
        self.now = 1000.0
        self.sent: list[dict[str, Any]] = []
        self.actions: list[Action] = []
        self._rest: Float32Array = np.zeros(0, dtype=np.float32)
        self.take(self.session.start())

    def take(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, Send):
                SERVER_EVENT.validate_python(action.event)
                self.sent.append(action.event)
        self.actions += actions
        return actions

    # --- inputs ---------------------------------------------------------------------------

    def audio(self, samples: Float32Array) -> list[Action]:
        """One ``on_audio`` call per completed 512-sample frame; the clock moves 32 ms a frame."""
        data = np.concatenate([self._rest, samples])
        n = len(data) // FRAME_SAMPLES
        self._rest = data[n * FRAME_SAMPLES :]
        out: list[Action] = []
        for i in range(n):
            frame = data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]
            loud = float(np.sqrt(np.mean(frame**2))) > 0.05
            self.now += FRAME_S
            out += self.take(
                self.session.on_audio(frame, [SPEECH_P if loud else SILENCE_P], self.now)
            )
        return out

    def speak(self, ms: float) -> list[Action]:
        return self.audio(tone(ms))

    def pause(self, ms: float) -> list[Action]:
        return self.audio(silence(ms))

    def append(self, samples: Float32Array, event_id: str | None = None) -> list[Action]:
        """As the shell appends: ``admit_audio`` first, then the frames if it was taken."""
        ms = len(samples) * 1000 / 16_000
        taken, refused = self.session.admit_audio(ms, self.now, event_id)
        return self.take(refused) + (self.audio(samples) if taken else [])

    def client(self, **event: Any) -> list[Action]:
        ev = protocol.parse_client_event(json.dumps(event))
        return self.take(self.session.on_client_event(ev, self.now))

    def transcript(
        self, request_id: str, result: Transcript | None, *, retried: bool = False
    ) -> list[Action]:
        return self.take(self.session.on_transcript(request_id, result, self.now, retried=retried))

    def done(
        self,
        response_id: str,
        status: str = "completed",
        segments: Sequence[tuple[str, float, float]] = (),
    ) -> list[Action]:
        return self.take(
            self.session.on_response_done(response_id, status, list(segments), self.now)
        )

    # --- scripted turns ---------------------------------------------------------------------

    def answered_turn(self, result: Transcript = HEARD) -> StartResponse:
        """Speak, pause to the endpoint, deliver the transcript: the (non-held) response."""
        self.speak(320)
        (spec,) = transcribes(self.pause(512))
        (start,) = starts(self.transcript(spec.request_id, result))
        assert not start.held
        return start


def sends(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.event for a in actions if isinstance(a, Send)]


def types(actions: list[Action]) -> list[str]:
    return [e["type"] for e in sends(actions)]


def transcribes(actions: list[Action]) -> list[Transcribe]:
    return [a for a in actions if isinstance(a, Transcribe)]


def starts(actions: list[Action]) -> list[StartResponse]:
    return [a for a in actions if isinstance(a, StartResponse)]


def of_type(actions: list[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def errors(actions: list[Action]) -> list[dict[str, Any]]:
    return [e["error"] for e in sends(actions) if e["type"] == "error"]


def manual(d: Driver) -> None:
    (ev,) = sends(
        d.client(type="session.update", session={"audio": {"input": {"turn_detection": None}}})
    )
    assert ev["type"] == "session.updated"
    assert ev["session"]["audio"]["input"]["turn_detection"] is None


# --- start -----------------------------------------------------------------------------------


def test_start_sends_session_created() -> None:
    d = Driver()
    (created,) = d.sent
    assert created["type"] == "session.created"
    session = created["session"]
    assert session["id"] == "sess_test" and session["instructions"] == "Be helpful."
    td = session["audio"]["input"]["turn_detection"]
    assert td["type"] == "server_vad" and td["silence_duration_ms"] == 500


# --- speech start and endpoint -----------------------------------------------------------------


def test_one_speech_frame_does_not_start_speech() -> None:
    d = Driver()
    assert d.pause(320) == []
    assert d.speak(32) == []  # a click
    assert d.pause(64) == []
    assert d.speak(32) == []
    actions = d.speak(32)
    assert types(actions) == ["input_audio_buffer.speech_started"]


def test_speech_started_reaches_back_by_the_prefix_padding() -> None:
    d = Driver()
    d.pause(640)  # 20 frames of silence
    actions = d.speak(64)  # frames 21 and 22: speech from 640 ms
    (started,) = sends(actions)
    assert started["type"] == "input_audio_buffer.speech_started"
    assert started["audio_start_ms"] == 640 - 300
    assert started["item_id"].startswith("item_")
    assert d.session.open_turn is not None


def test_speech_started_is_never_before_zero() -> None:
    d = Driver()
    d.pause(96)
    (started,) = sends(d.speak(64))
    assert started["audio_start_ms"] == 0
    d2 = Driver()
    (started,) = sends(d2.speak(64))
    assert started["audio_start_ms"] == 0


def test_prefix_padding_is_configurable() -> None:
    d = Driver()
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"prefix_padding_ms": 100}}}},
    )
    d.pause(640)
    (started,) = sends(d.speak(64))
    assert started["audio_start_ms"] == 540


def test_endpoint_after_the_silence_duration() -> None:
    d = Driver()
    d.pause(320)
    (started,) = sends(d.speak(640))
    item_id = started["item_id"]
    quiet = d.pause(480)  # 15 silent frames: not yet
    assert "input_audio_buffer.speech_stopped" not in types(quiet)
    actions = d.pause(32)  # the 16th: 512 ms ≥ 500 ms
    assert types(actions) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    stopped, committed, added = sends(actions)
    assert stopped["item_id"] == committed["item_id"] == added["item"]["id"] == item_id
    assert stopped["audio_end_ms"] == 320 + 640 + 32  # last speech frame's end, plus a frame
    assert committed["previous_item_id"] is None
    assert added["item"]["role"] == "user" and added["item"]["status"] == "in_progress"
    assert d.session.items[item_id].status == "in_progress"
    assert d.session.open_turn is None
    turn = of_type(d.actions, Transcribe)[0].turn
    assert turn is not None and {"speech_start", "speech_end", "endpoint"} <= set(turn.marks)
    assert turn.marks["endpoint"] - turn.marks["speech_end"] == pytest.approx(0.512)


def test_silence_duration_is_configurable() -> None:
    d = Driver()
    (updated,) = sends(
        d.client(
            type="session.update",
            session={"audio": {"input": {"turn_detection": {"silence_duration_ms": 200}}}},
        )
    )
    td = updated["session"]["audio"]["input"]["turn_detection"]
    assert td["silence_duration_ms"] == 200
    d.speak(320)
    assert "input_audio_buffer.speech_stopped" not in types(d.pause(192))  # 6 frames
    assert types(d.pause(32))[0] == "input_audio_buffer.speech_stopped"  # 7: 224 ms


def test_threshold_decides_what_is_speech() -> None:
    d = Driver()
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"threshold": 0.99}}}},
    )
    assert d.speak(640) == []  # 0.95 is below the threshold now


# --- speculative decoding ----------------------------------------------------------------------


def test_speculative_transcribe_once_the_pause_reaches_160_ms() -> None:
    d = Driver()
    d.speak(320)
    assert transcribes(d.pause(128)) == []  # 4 frames
    (spec,) = transcribes(d.pause(32))  # the 5th: 160 ms
    assert spec.purpose == "speculative" and spec.turn is d.session.open_turn
    assert len(spec.audio) > 0
    assert transcribes(d.pause(96)) == []  # asked once per pause


def test_speculative_result_prefetches_a_held_response_released_at_the_endpoint() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    (held,) = d.transcript(spec.request_id, HEARD)
    assert isinstance(held, StartResponse) and held.held
    assert held.canned_text is None
    assert held.messages[0] == {"role": "system", "content": "Be helpful."}
    assert held.messages[-1] == {"role": "user", "content": "what time is it"}
    assert not d.session.response_active  # held: the client knows nothing of it yet
    actions = d.pause(352)  # 16 silent frames in all
    assert transcribes(actions) == []  # no second decode
    assert of_type(actions, ReleaseResponse) == [ReleaseResponse(held.response_id)]
    assert starts(actions) == []
    assert types(actions) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    completed = sends(actions)[3]
    assert completed["transcript"] == "what time is it"
    assert d.session.response_active
    assert held.turn.models["asr"] == "fake-asr"
    item_id = completed["item_id"]
    assert d.session.items[item_id].text == "what time is it"
    assert d.session.items[item_id].status == "completed"


def test_speculative_retry_is_recorded_on_the_turn() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    (held,) = starts(d.transcript(spec.request_id, HEARD, retried=True))
    d.pause(352)
    assert held.turn.recovery == ["asr_retry"]


def test_failed_speculative_decode_is_redone_at_the_endpoint() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    assert d.transcript(spec.request_id, None) == []
    (final,) = transcribes(d.pause(352))
    assert final.purpose == "final"
    (start,) = starts(d.transcript(final.request_id, HEARD))
    assert not start.held and start.canned_text is None


def test_speech_resuming_drops_the_speculative_decode_in_flight() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    actions = d.speak(64)
    assert sends(actions) == []  # still the same utterance: no second speech_started
    assert d.transcript(spec.request_id, HEARD) == []  # stale
    (spec2,) = transcribes(d.pause(160))
    assert spec2.request_id != spec.request_id
    (held,) = starts(d.transcript(spec2.request_id, HEARD))
    assert held.held


def test_speech_resuming_cancels_the_held_response() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    (held,) = starts(d.transcript(spec.request_id, HEARD))
    actions = d.speak(32)
    assert actions == [CancelResponse(held.response_id, "superseded")]
    assert d.transcript(spec.request_id, HEARD) == []  # a late duplicate changes nothing
    # The next pause prefetches again; the endpoint releases the new one.
    (spec2,) = transcribes(d.pause(160))
    (held2,) = starts(d.transcript(spec2.request_id, Transcript("what time is it now")))
    actions = d.pause(352)
    assert of_type(actions, ReleaseResponse) == [ReleaseResponse(held2.response_id)]
    assert held2.messages[-1]["content"] == "what time is it now"


def test_endpoint_while_the_speculative_decode_is_in_flight() -> None:
    d = Driver()
    d.speak(320)
    actions = d.pause(512)  # the speculative decode is asked for, then the endpoint comes
    (spec,) = transcribes(actions)
    assert spec.purpose == "speculative"
    assert types(actions)[-3:] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    actions = d.transcript(spec.request_id, HEARD)  # now treated as the final transcript
    assert types(actions) == [
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    (start,) = starts(actions)
    assert not start.held and start.canned_text is None
    assert start.messages[-1] == {"role": "user", "content": "what time is it"}
    assert d.session.response_active
    assert "asr_final" in start.turn.marks


def test_partial_transcripts_while_speaking() -> None:
    d = Driver()
    d.speak(64)
    assert transcribes(d.speak(1152)) == []
    (partial,) = transcribes(d.speak(64))
    assert partial.purpose == "partial"
    (delta,) = sends(d.transcript(partial.request_id, Transcript("what time")))
    assert delta["type"] == "conversation.item.input_audio_transcription.delta"
    assert delta["delta"] == "what time"
    (partial2,) = transcribes(d.speak(1216))
    (delta2,) = sends(d.transcript(partial2.request_id, Transcript("what time is it")))
    assert delta2["delta"] == " is it"
    (partial3,) = transcribes(d.speak(1216))
    assert d.transcript(partial3.request_id, Transcript("what tim is it")) == []  # revised


# --- hallucinations and ASR failures ------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        Transcript("Thank you.", no_speech_prob=0.1, avg_logprob=-0.3),
        Transcript(""),
        Transcript("  ...  "),
        Transcript("book a table", no_speech_prob=0.9, avg_logprob=-1.5),
    ],
    ids=["subtitle-phrase", "empty", "dots", "no-speech-prob"],
)
def test_unusable_transcript_finishes_the_turn_as_no_speech(result: Transcript) -> None:
    assert not usable(result)
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(512))
    actions = d.transcript(spec.request_id, result)
    assert starts(actions) == []
    (finish,) = of_type(actions, FinishTurn)
    assert finish.turn.outcome == "no_speech" and "no_speech" in finish.turn.recovery
    completed = sends(actions)[0]
    assert completed["type"] == "conversation.item.input_audio_transcription.completed"
    assert completed["transcript"] == ""
    assert not d.session.response_active


def test_unusable_speculative_result_prefetches_nothing() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    assert d.transcript(spec.request_id, Transcript("Thank you.")) == []
    actions = d.pause(352)
    assert starts(actions) == [] and transcribes(actions) == []
    (finish,) = of_type(actions, FinishTurn)
    assert finish.turn.outcome == "no_speech"


def test_usable_thresholds_are_configurable() -> None:
    doubtful = Transcript("book a table", no_speech_prob=0.5, avg_logprob=-1.5)
    assert usable(doubtful)
    assert not usable(doubtful, no_speech=0.4)
    assert usable(doubtful, no_speech=0.4, min_logprob=-2.0)
    d = Driver(no_speech_threshold=0.4)
    d.speak(320)
    (spec,) = transcribes(d.pause(512))
    assert of_type(d.transcript(spec.request_id, doubtful), FinishTurn)


def test_asr_failure_speaks_the_canned_apology() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(512))
    actions = d.transcript(spec.request_id, None)
    assert sends(actions) == []  # nothing transcribed to report
    (start,) = starts(actions)
    assert start.canned_text == SORRY_DIDNT_CATCH and "didn't catch that" in start.canned_text
    assert not start.held
    assert start.turn.recovery == ["asr_failed"]
    assert d.session.response_active
    (item,) = d.session.items.values()
    assert item.status == "incomplete"


def test_asr_failure_after_a_retry_records_both() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    d.transcript(spec.request_id, None, retried=True)  # speculative: primary and fallback failed
    (final,) = transcribes(d.pause(352))
    (start,) = starts(d.transcript(final.request_id, None, retried=True))
    assert start.canned_text == SORRY_DIDNT_CATCH
    assert start.turn.recovery == ["asr_retry", "asr_failed"]


def test_asr_retry_that_succeeds_is_recorded() -> None:
    d = Driver()
    d.speak(320)
    (spec,) = transcribes(d.pause(512))
    (start,) = starts(d.transcript(spec.request_id, HEARD, retried=True))
    assert start.canned_text is None and start.turn.recovery == ["asr_retry"]


# --- barge-in ------------------------------------------------------------------------------------


def test_barge_in_cancels_the_active_response() -> None:
    d = Driver(barge_in_min_ms=0)  # any speech interrupts at once (tests/test_semantic_vad.py)
    start = d.answered_turn()
    actions = d.speak(64)
    assert actions[0] == CancelResponse(start.response_id, "turn_detected")
    assert types(actions) == ["input_audio_buffer.speech_started"]
    assert "barge_in" in start.turn.recovery
    new_turn = d.session.open_turn
    assert new_turn is not None and new_turn is not start.turn
    assert "barge_in" not in new_turn.recovery


def test_barge_in_cancels_a_released_response() -> None:
    d = Driver(barge_in_min_ms=0)
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    (held,) = starts(d.transcript(spec.request_id, HEARD))
    d.pause(352)  # released
    actions = d.speak(64)
    assert CancelResponse(held.response_id, "turn_detected") in actions
    assert held.turn.recovery == ["barge_in"]


def test_no_barge_in_without_interrupt_response() -> None:
    d = Driver()
    (updated,) = sends(
        d.client(
            type="session.update",
            session={
                "audio": {
                    "input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}
                }
            },
        )
    )
    assert updated["session"]["audio"]["input"]["turn_detection"]["interrupt_response"] is False
    start = d.answered_turn()
    actions = d.speak(64)
    assert of_type(actions, CancelResponse) == []
    assert types(actions) == ["input_audio_buffer.speech_started"]
    assert start.turn.recovery == []
    assert d.session.response_active


def test_create_response_false_waits_for_response_create() -> None:
    d = Driver()
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"create_response": False}}}},
    )
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    assert d.transcript(spec.request_id, HEARD) == []  # nothing prefetched
    actions = d.pause(352)
    assert starts(actions) == []
    assert "conversation.item.input_audio_transcription.completed" in types(actions)
    (start,) = starts(d.client(type="response.create"))
    assert start.messages[-1] == {"role": "user", "content": "what time is it"}
    assert "endpoint" in start.turn.marks


# --- manual turns ----------------------------------------------------------------------------


def test_manual_mode_has_no_vad_events() -> None:
    d = Driver()
    manual(d)
    assert d.session.config.turn_detection is None
    assert d.speak(960) == []
    assert d.pause(960) == []
    assert d.session.open_turn is None


def test_manual_commit_of_too_little_audio_is_an_error() -> None:
    d = Driver()
    manual(d)
    d.speak(64)
    (err,) = errors(d.client(type="input_audio_buffer.commit", event_id="evt_c1"))
    assert err["code"] == "input_audio_buffer_commit_empty"
    assert err["event_id"] == "evt_c1"
    d.speak(64)  # 128 ms buffered now: the short audio was kept
    actions = d.client(type="input_audio_buffer.commit")
    assert types(actions) == ["input_audio_buffer.committed", "conversation.item.added"]
    (final,) = transcribes(actions)
    assert final.purpose == "final" and len(final.audio) == 128 * 16


def test_manual_commit_then_response_create_waits_for_the_transcript() -> None:
    d = Driver()
    manual(d)
    d.speak(640)
    actions = d.client(type="input_audio_buffer.commit")
    committed = sends(actions)[0]
    (final,) = transcribes(actions)
    assert final.purpose == "final" and final.turn is not None
    assert d.client(type="response.create") == []  # deferred: the transcript is not here yet
    actions = d.transcript(final.request_id, HEARD)
    assert types(actions) == [
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    (start,) = starts(actions)
    assert not start.held
    assert start.messages == [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "what time is it"},
    ]
    assert start.turn is final.turn
    assert d.session.items[committed["item_id"]].text == "what time is it"


def test_manual_commit_without_response_create_starts_nothing() -> None:
    d = Driver()
    manual(d)
    d.speak(320)
    (final,) = transcribes(d.client(type="input_audio_buffer.commit"))
    assert starts(d.transcript(final.request_id, HEARD)) == []
    (start,) = starts(d.client(type="response.create"))
    assert start.messages[-1]["content"] == "what time is it"
    assert start.turn is final.turn


def test_clear_empties_the_buffer() -> None:
    d = Driver()
    manual(d)
    d.speak(320)
    assert types(d.client(type="input_audio_buffer.clear")) == ["input_audio_buffer.cleared"]
    (err,) = errors(d.client(type="input_audio_buffer.commit"))
    assert err["code"] == "input_audio_buffer_commit_empty"


def test_turn_detection_can_be_switched_back_on() -> None:
    d = Driver()
    manual(d)
    d.speak(320)
    d.pause(320)
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
    )
    assert types(d.speak(64)) == ["input_audio_buffer.speech_started"]


# --- response and item errors --------------------------------------------------------------------


def test_response_create_while_a_response_is_active_is_an_error() -> None:
    d = Driver()
    (start,) = starts(d.client(type="response.create"))
    assert start.messages == [{"role": "system", "content": "Be helpful."}]
    (err,) = errors(d.client(type="response.create", event_id="evt_r2"))
    assert err["code"] == "conversation_already_has_active_response"
    assert err["event_id"] == "evt_r2"
    d.done(start.response_id)
    assert starts(d.client(type="response.create"))


def test_response_create_parameters() -> None:
    d = Driver()
    (start,) = starts(
        d.client(
            type="response.create",
            response={
                "instructions": "Answer in French.",
                "output_modalities": ["text"],
                "max_output_tokens": 20,
            },
        )
    )
    assert start.messages[0] == {"role": "system", "content": "Answer in French."}
    assert start.modalities == ["text"] and start.max_output_tokens == 20
    d.done(start.response_id)
    (again,) = starts(d.client(type="response.create"))
    assert again.messages[0]["content"] == "Be helpful."
    assert again.modalities == ["audio"] and again.max_output_tokens is None


def test_response_cancel() -> None:
    d = Driver()
    (err,) = errors(d.client(type="response.cancel", event_id="evt_x"))
    assert err["code"] == "response_cancel_not_active" and err["event_id"] == "evt_x"
    (start,) = starts(d.client(type="response.create"))
    (err,) = errors(d.client(type="response.cancel", response_id="resp_other"))
    assert err["code"] == "response_cancel_not_active"
    assert d.client(type="response.cancel") == [
        CancelResponse(start.response_id, "client_cancelled")
    ]
    assert d.client(type="response.cancel", response_id=start.response_id) == [
        CancelResponse(start.response_id, "client_cancelled")
    ]
    d.done(start.response_id, "cancelled")
    assert not d.session.response_active
    assert errors(d.client(type="response.cancel"))


def test_output_audio_buffer_clear_cancels_the_active_response() -> None:
    d = Driver()
    assert d.client(type="output_audio_buffer.clear") == []
    (start,) = starts(d.client(type="response.create"))
    actions = d.client(type="output_audio_buffer.clear")
    assert actions[0] == CancelResponse(start.response_id, "client_cancelled")
    (cleared,) = sends(actions)
    assert cleared["type"] == "output_audio_buffer.cleared"
    assert cleared["response_id"] == start.response_id


def test_unknown_items_are_errors_carrying_the_event_id() -> None:
    d = Driver()
    (err,) = errors(d.client(type="conversation.item.delete", item_id="item_x", event_id="e1"))
    assert err["code"] == "item_not_found" and err["event_id"] == "e1"
    (err,) = errors(
        d.client(
            type="conversation.item.truncate",
            item_id="item_y",
            content_index=0,
            audio_end_ms=100,
            event_id="e2",
        )
    )
    assert err["code"] == "item_not_found" and err["event_id"] == "e2"


def test_items_can_be_created_and_deleted() -> None:
    d = Driver()
    actions = d.client(
        type="conversation.item.create",
        item={
            "id": "item_u1",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hello"}],
        },
    )
    assert types(actions) == ["conversation.item.added", "conversation.item.done"]
    added = sends(actions)[0]
    assert added["previous_item_id"] is None and added["item"]["id"] == "item_u1"
    actions = d.client(
        type="conversation.item.create",
        item={"role": "system", "content": [{"type": "input_text", "text": "be nice"}]},
    )
    assert sends(actions)[0]["previous_item_id"] == "item_u1"
    d.client(
        type="conversation.item.create",
        item={"role": "assistant", "content": [{"type": "output_text", "text": "hi"}]},
    )
    (err,) = errors(
        d.client(
            type="conversation.item.create",
            event_id="e3",
            item={"id": "item_u1", "role": "user", "content": []},
        )
    )
    assert err["code"] == "item_exists" and err["event_id"] == "e3"
    (start,) = starts(d.client(type="response.create"))
    assert [m["role"] for m in start.messages] == ["system", "user", "system", "assistant"]
    d.done(start.response_id)
    (deleted,) = sends(d.client(type="conversation.item.delete", item_id="item_u1"))
    assert deleted["type"] == "conversation.item.deleted" and deleted["item_id"] == "item_u1"
    (start,) = starts(d.client(type="response.create"))
    assert "hello" not in [m["content"] for m in start.messages]
    # A user item cannot be truncated.
    d.client(
        type="conversation.item.create",
        item={"id": "item_u2", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
    )
    (err,) = errors(d.client(type="conversation.item.truncate", item_id="item_u2", audio_end_ms=10))
    assert err["code"] == "item_not_found"


# --- conversation memory -------------------------------------------------------------------------

REPLY = [("Sure.", 0.0, 500.0), ("It is noon.", 500.0, 1500.0)]


def test_response_done_stores_the_assistant_item() -> None:
    d = Driver()
    start = d.answered_turn()
    # The core finishes the turn its heard response belonged to, and says how it ended.
    (finish,) = d.done(start.response_id, "completed", REPLY)
    assert isinstance(finish, FinishTurn) and finish.turn is start.turn
    assert finish.turn.outcome == "spoken" and finish.turn.extra["audio_sent_ms"] == 1500.0
    assert finish.turn.evidence.spoken == "Sure. It is noon."
    assert not d.session.response_active
    item = d.session.items[start.item_id]
    assert item.role == "assistant" and item.text == "Sure. It is noon."
    assert item.status == "completed" and item.segments == REPLY
    (again,) = starts(d.client(type="response.create"))
    assert again.messages[1:] == [
        {"role": "user", "content": "what time is it"},
        {"role": "assistant", "content": "Sure. It is noon."},
    ]


def test_response_done_for_an_unknown_response_changes_nothing() -> None:
    d = Driver()
    start = d.answered_turn()
    assert d.done("resp_unknown", "completed", REPLY) == []
    assert d.session.response_active and start.item_id not in d.session.items


def test_cancelled_response_is_stored_as_incomplete() -> None:
    d = Driver()
    start = d.answered_turn()
    d.done(start.response_id, "cancelled", [("Sure.", 0.0, 500.0)])
    assert d.session.items[start.item_id].status == "incomplete"


def test_truncate_cuts_the_assistant_text_to_what_was_played() -> None:
    d = Driver()
    start = d.answered_turn()
    d.done(start.response_id, "completed", REPLY)
    actions = d.client(
        type="conversation.item.truncate",
        item_id=start.item_id,
        content_index=0,
        audio_end_ms=1000,
    )
    (truncated,) = sends(actions)
    assert truncated["type"] == "conversation.item.truncated"
    assert truncated["item_id"] == start.item_id and truncated["audio_end_ms"] == 1000
    item = d.session.items[start.item_id]
    assert item.text == spoken_text(REPLY, 1000) == "Sure. It"
    assert item.status == "incomplete"
    (again,) = starts(d.client(type="response.create"))
    assert again.messages[-1] == {"role": "assistant", "content": "Sure. It"}


def test_a_truncate_that_comes_while_the_answer_runs_applies_when_it_ends() -> None:
    # The client plays what it is sent, so it hears the caller speak over the answer before
    # this server's response has ended: the truncate names an item that is not kept yet.
    d = Driver()
    start = d.answered_turn()
    (truncated,) = sends(
        d.client(type="conversation.item.truncate", item_id=start.item_id, audio_end_ms=1000)
    )
    assert truncated["type"] == "conversation.item.truncated"
    assert start.item_id not in d.session.items
    d.done(start.response_id, "cancelled", REPLY)
    item = d.session.items[start.item_id]
    assert (item.text, item.status) == ("Sure. It", "incomplete")


def test_next_turn_after_a_response_includes_the_history() -> None:
    d = Driver()
    start = d.answered_turn()
    d.done(start.response_id, "completed", REPLY)
    second = d.answered_turn(Transcript("and tomorrow"))
    assert [m["content"] for m in second.messages] == [
        "Be helpful.",
        "what time is it",
        "Sure. It is noon.",
        "and tomorrow",
    ]


def test_history_is_bounded_and_forgets_in_blocks_so_the_prompt_start_holds() -> None:
    # Each turn adds 15 + 17 characters; the bound is 100, so it is crossed at the 4th turn.
    d = Driver(history_chars=100)
    seen = []
    for i in range(8):
        start = d.answered_turn(Transcript(f"question {i:02d}....", 0.01, -0.2, "fake-asr"))
        seen.append([m["content"] for m in start.messages[1:]])
        d.done(start.response_id, "completed", [(f"answer {i:02d}.........", 0.0, 900.0)])
    for history in seen:
        assert history[-1].startswith("question")  # what was just said is always there
        assert sum(map(len, history)) <= 100
    # Within the bound nothing is dropped; past it, down to half, and then the oldest kept
    # message stays first for the next turns (llama.cpp reuses the cached prefix).
    assert seen[2][0] == "question 00...." and len(seen[2]) == 5
    assert len(seen[3]) < len(seen[2]) and sum(map(len, seen[3])) <= 50
    assert seen[4][0] == seen[3][0]
    # Everything still is in the conversation the client sees.
    assert len(d.session.items) == 16


def test_a_single_long_utterance_is_kept_even_over_the_history_bound() -> None:
    d = Driver(history_chars=10)
    start = d.answered_turn(Transcript("a rather long question indeed", 0.01, -0.2, "fake-asr"))
    assert [m["content"] for m in start.messages] == [
        "Be helpful.",
        "a rather long question indeed",
    ]


def test_turn_committed_during_a_response_is_answered_by_a_later_response_create() -> None:
    d = Driver()
    manual(d)
    (first,) = starts(d.client(type="response.create"))
    d.speak(320)
    (final,) = transcribes(d.client(type="input_audio_buffer.commit"))
    assert errors(d.client(type="response.create"))  # one is active
    d.transcript(final.request_id, HEARD)
    (finish,) = d.done(first.response_id, "completed", [("Hi.", 0.0, 300.0)])
    assert isinstance(finish, FinishTurn) and finish.turn is first.turn  # not the new turn
    (start,) = starts(d.client(type="response.create"))
    assert start.turn is final.turn
    assert {"role": "user", "content": "what time is it"} in start.messages


# --- session.update ------------------------------------------------------------------------------


def test_session_update_changes_instructions_formats_and_voice() -> None:
    d = Driver()
    (updated,) = sends(
        d.client(
            type="session.update",
            session={
                "type": "realtime",
                "instructions": "Be brief.",
                "output_modalities": ["text"],
                "max_output_tokens": 64,
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}},
                    "output": {"format": {"type": "audio/pcma"}, "voice": "amy", "speed": 1.5},
                },
            },
        )
    )
    s = updated["session"]
    assert s["instructions"] == "Be brief."
    assert s["output_modalities"] == ["text"] and s["max_output_tokens"] == 64
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert s["audio"]["output"]["format"] == {"type": "audio/pcma"}
    assert s["audio"]["output"]["voice"] == "amy" and s["audio"]["output"]["speed"] == 1.5
    assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"  # untouched
    c = d.session.config
    assert (c.input_format, c.output_format, c.voice) == ("audio/pcmu", "audio/pcma", "amy")
    (start,) = starts(d.client(type="response.create"))
    assert start.messages[0] == {"role": "system", "content": "Be brief."}
    assert start.modalities == ["text"] and start.max_output_tokens == 64


def test_session_update_with_pcm_reports_the_rate() -> None:
    d = Driver()
    (updated,) = sends(
        d.client(
            type="session.update",
            session={"audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}}},
        )
    )
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_session_update_to_semantic_vad_still_detects_speech() -> None:
    d = Driver()
    (updated,) = sends(
        d.client(
            type="session.update",
            session={"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
        )
    )
    assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    assert types(d.speak(64)) == ["input_audio_buffer.speech_started"]


def test_session_update_without_audio_keeps_turn_detection() -> None:
    d = Driver()
    d.client(type="session.update", session={"instructions": "x"})
    assert d.session.config.turn_detection is not None


# --- spoken_text -------------------------------------------------------------------------------


def test_spoken_text_whole_pieces() -> None:
    assert spoken_text(REPLY, 1500) == "Sure. It is noon."
    assert spoken_text(REPLY, 5000) == "Sure. It is noon."
    assert spoken_text(REPLY, 500) == "Sure."


def test_spoken_text_cuts_a_piece_by_its_share_of_words() -> None:
    assert spoken_text(REPLY, 1000) == "Sure. It"  # half of three words: one
    assert spoken_text(REPLY, 1200) == "Sure. It is"  # 70 %: two
    assert spoken_text([("one two three four", 0.0, 400.0)], 399.0) == "one two three"
    assert spoken_text([("one two", 0.0, 100.0), ("three", 200.0, 300.0)], 150.0) == "one two"


def test_spoken_text_nothing_played() -> None:
    assert spoken_text(REPLY, 0) == ""
    assert spoken_text(REPLY, 100) == ""  # a fifth of one word
    assert spoken_text([], 1000) == ""


# --- regressions: bugs found by these tests, now fixed ----------------------------------------------------------


def test_asr_failure_while_a_response_is_active_does_not_start_a_second_one() -> None:
    d = Driver()
    manual(d)
    assert starts(d.client(type="response.create"))
    d.speak(320)
    (final,) = transcribes(d.client(type="input_audio_buffer.commit"))
    actions = d.transcript(final.request_id, None)
    # The first response is still running: a second one must not start beside it.
    assert [s for s in starts(actions) if not s.held] == []


def _prefetched(d: Driver) -> StartResponse:
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    (held,) = starts(d.transcript(spec.request_id, HEARD))
    assert held.held
    return held


def test_response_create_after_clearing_a_prefetched_turn_is_answered() -> None:
    d = Driver()
    _prefetched(d)
    d.client(type="input_audio_buffer.clear")
    (start,) = starts(d.client(type="response.create"))
    assert not start.held


def test_next_turn_after_clear_is_not_answered_with_the_cleared_prefetch() -> None:
    d = Driver()
    stale = _prefetched(d)
    d.client(type="input_audio_buffer.clear")
    d.speak(320)
    (spec,) = transcribes(d.pause(512))
    actions = d.transcript(spec.request_id, Transcript("book a table"))
    assert ReleaseResponse(stale.response_id) not in actions
    (start,) = starts(actions)
    assert start.messages[-1] == {"role": "user", "content": "book a table"}


def test_response_cancel_during_a_pause_does_not_cancel_the_hidden_prefetch() -> None:
    d = Driver()
    _prefetched(d)
    actions = d.client(type="response.cancel", event_id="evt_c")
    assert of_type(actions, CancelResponse) == []
    (err,) = errors(actions)
    assert err["code"] == "response_cancel_not_active"


@pytest.mark.parametrize("interrupt", [True, False], ids=["barge-in", "no-interrupt"])
def test_turn_spoken_over_a_response_is_answered_when_that_response_ends(interrupt: bool) -> None:
    d = Driver()
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"interrupt_response": interrupt}}}},
    )
    first = d.answered_turn()
    d.speak(320)
    (spec,) = transcribes(d.pause(512))
    actions = d.transcript(spec.request_id, Transcript("book a table"))
    assert starts(actions) == []  # the first response has not reported done yet
    (start,) = starts(d.done(first.response_id, "cancelled" if interrupt else "completed"))
    assert start.messages[-1] == {"role": "user", "content": "book a table"}


def test_after_clear_speech_start_still_needs_two_frames() -> None:
    d = Driver()
    d.speak(320)
    d.client(type="input_audio_buffer.clear")
    assert d.speak(32) == []


def test_manual_commit_after_switching_off_vad_transcribes_the_committed_audio() -> None:
    d = Driver()
    stale = _prefetched(d)
    manual(d)
    d.speak(960)  # the user goes on talking, then commits by hand
    actions = d.client(type="input_audio_buffer.commit")
    assert ReleaseResponse(stale.response_id) not in actions
    (final,) = transcribes(actions)
    assert final.purpose == "final"


# --- bounds: what one client can make the session hold ------------------------------------------


@pytest.mark.reliability("input", "a minute of silence, server VAD: only the prefix padding kept")
def test_idle_audio_keeps_only_what_a_speech_start_reaches_back_to() -> None:
    d = Driver()
    d.pause(60_000)  # a minute of silence (or hold music under the VAD threshold)
    assert d.session.buffered_ms <= 300 + 3 * 32
    (started,) = sends(d.speak(64))
    assert started["audio_start_ms"] == 60_000 - 300  # the prefix padding is still there
    (spec,) = transcribes(d.pause(512))
    assert len(spec.audio) == (300 + 64 + 160) * 16  # padding, speech, the pause so far


def test_idle_trimming_follows_the_prefix_padding_setting() -> None:
    d = Driver()
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"prefix_padding_ms": 1000}}}},
    )
    d.pause(4_992)  # 156 frames
    assert 1000 <= d.session.buffered_ms <= 1000 + 3 * 32
    (started,) = sends(d.speak(64))
    assert started["audio_start_ms"] == 4_992 - 1000


@pytest.mark.reliability("input", "manual buffer past voice.max_buffer_s: appends refused")
def test_manual_buffer_refuses_appends_past_the_cap_until_commit() -> None:
    d = Driver(max_buffer_ms=1024)
    manual(d)
    chunk = tone(32)  # one frame: the driver feeds the session whole frames
    for _ in range(32):  # exactly 1024 ms
        assert errors(d.append(chunk)) == []
    (err,) = errors(d.append(chunk, event_id="evt_a33"))
    assert err["code"] == "input_audio_buffer_full" and err["event_id"] == "evt_a33"
    assert "commit or clear" in err["message"]
    assert all(d.append(chunk) == [] for _ in range(50))  # told once, then dropped quietly
    assert d.session.buffered_ms == 1024
    (final,) = transcribes(d.client(type="input_audio_buffer.commit"))
    assert len(final.audio) == 1024 * 16
    assert errors(d.append(chunk)) == []  # room again
    d.client(type="input_audio_buffer.clear")
    for _ in range(32):
        d.append(chunk)
    (again,) = errors(d.append(chunk))  # a new run of refusals is told again
    assert again["code"] == "input_audio_buffer_full"


@pytest.mark.reliability("input", "a spoken turn past voice.max_buffer_s: committed at the cap")
def test_a_spoken_turn_is_committed_when_it_reaches_the_cap() -> None:
    d = Driver(max_buffer_ms=2000)
    d.pause(320)
    actions = d.speak(2400)
    assert types(actions)[:5] == [
        "input_audio_buffer.speech_started",
        "error",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    (err,) = errors(actions)
    assert err["code"] == "input_audio_buffer_full" and "committed" in err["message"]
    final = next(t for t in transcribes(actions) if t.purpose == "final")
    assert len(final.audio) == 2000 * 16  # the turn, cut at the cap
    assert final.turn is not None and final.turn.extra["buffer_full"] is True
    # The speech that goes on is the next turn.
    assert types(actions)[-1] == "input_audio_buffer.speech_started"
    assert d.session.open_turn is not None and d.session.open_turn is not final.turn
    assert d.session.buffered_ms < 2000


@pytest.mark.reliability(
    "input", "audio sent faster than voice.max_audio_rate: dropped, then closed"
)
def test_audio_faster_than_the_rate_limit_is_dropped_then_the_session_closed() -> None:
    d = Driver(max_audio_rate=4.0, audio_burst_ms=2000)
    s, now = d.session, d.now
    assert s.admit_audio(1000, now) == (True, [])
    assert s.admit_audio(1000, now) == (True, [])  # the burst
    taken, actions = s.admit_audio(500, now, "evt_fast")
    (err,) = errors(d.take(actions))
    assert not taken and err["code"] == "input_audio_rate_exceeded"
    assert err["event_id"] == "evt_fast" and "4x real time" in err["message"]
    assert s.admit_audio(500, now) == (False, [])  # told once per run of refusals
    # 0.25 s later a quarter second of audio at 4x has room again: the run ends.
    assert s.admit_audio(1000, now + 0.25) == (True, [])
    taken, actions = s.admit_audio(1000, now + 0.25)
    assert not taken and errors(d.take(actions))  # a new run is told again
    assert s.admit_audio(1000, now + 0.25) == (False, [])
    taken, actions = s.admit_audio(100, now + 0.25)  # past another burst dropped
    assert not taken and actions == [Close(1008, "audio sent faster than 4x real time")]


def test_audio_at_real_time_is_never_limited() -> None:
    d = Driver(max_audio_rate=1.5, audio_burst_ms=100)
    for audio in [silence(32)] * 10 + ([tone(32)] * 20 + [silence(32)] * 20) * 3:
        assert errors(d.append(audio)) == []
    assert types(d.actions).count("input_audio_buffer.committed") == 3


def _create(d: Driver, text: str, **item: Any) -> list[Action]:
    part = {"type": "input_text", "text": text}
    return d.client(
        type="conversation.item.create",
        event_id="evt_item",
        item={"role": "user", "content": [part], **item},
    )


@pytest.mark.reliability("input", "conversation.item.create past the item and text caps")
def test_conversation_items_and_text_are_capped() -> None:
    d = Driver(max_items=3, max_item_chars=10, max_conversation_chars=25)
    (err,) = errors(_create(d, "x" * 11))
    assert err["code"] == "item_too_large" and err["event_id"] == "evt_item"
    assert "11 characters" in err["message"] and d.session.items == {}
    assert errors(_create(d, "a" * 10, id="item_1")) == []
    assert errors(_create(d, "b" * 10, id="item_2")) == []
    (err,) = errors(_create(d, "c" * 10))  # 30 characters > 25
    assert err["code"] == "conversation_full"
    assert errors(_create(d, "c" * 5)) == []
    (err,) = errors(_create(d, ""))  # a fourth item
    assert err["code"] == "conversation_full"
    d.client(type="conversation.item.delete", item_id="item_1")
    assert errors(_create(d, "d" * 10)) == []
    assert len(d.session.items) == 3


def test_items_the_model_no_longer_sees_keep_only_their_id_and_make_way() -> None:
    # As in test_history_is_bounded_and_forgets_in_blocks_so_the_prompt_start_holds: the 4th
    # and 6th turns each let the 4 oldest messages go.
    d = Driver(history_chars=100, max_items=10)
    for i in range(6):
        start = d.answered_turn(Transcript(f"question {i:02d}....", 0.01, -0.2, "fake-asr"))
        d.done(start.response_id, "completed", [(f"answer {i:02d}.........", 0.0, 900.0)])
    items = d.session.items
    assert len(items) == 10  # 12 made: the two oldest went first
    forgotten = [i for i in items.values() if not i.text]
    assert len(forgotten) == 6 and all(i.segments == [] for i in forgotten)
    # A client's item at the cap: a forgotten one makes way, the conversation goes on.
    oldest = next(iter(items))
    assert errors(_create(d, "and one more thing")) == []
    assert oldest not in items and len(items) == 10
    (start,) = starts(d.client(type="response.create"))
    assert start.messages[-1] == {"role": "user", "content": "and one more thing"}


def test_a_cancelled_answer_and_a_turn_cut_off_by_a_hang_up_are_finished_by_the_core() -> None:
    d = Driver()
    start = d.answered_turn()
    d.speak(1200)  # the caller talks over the answer past barge_in_min_ms: a barge-in
    (finish,) = of_type(
        d.session.on_response_done(
            start.response_id, "cancelled", [("Sure.", 0.0, 400.0)], d.now,
            sent=[("Sure.", 0.0, 400.0), ("It is", 400.0, 900.0)], cancel_to_done_ms=3.0,
        ),
        FinishTurn,
    )  # fmt: skip
    assert finish.turn.outcome == "cancelled" and "barge_in" in finish.turn.recovery
    assert finish.turn.extra == {"cancel_to_done_ms": 3.0, "audio_sent_ms": 900.0}
    # The caller hangs up mid-sentence: the turn being spoken is abandoned, with its audio.
    (gone,) = of_type(d.session.on_close(d.now), FinishTurn)
    assert gone.turn is not start.turn and gone.turn.outcome == "abandoned"
    assert gone.turn.recovery == ["abandoned"] and gone.turn.evidence.audio is not None
    assert d.session.on_close(d.now) == []  # nothing is finished twice


def test_the_input_side_moves_through_its_states() -> None:
    d = Driver()
    assert d.session.state is TurnState.QUIET
    d.speak(320)
    assert d.session.state is TurnState.SPEECH
    d.pause(200)
    assert d.session.state is TurnState.SPEECH  # a pause inside the turn
    d.pause(400)
    assert d.session.state is TurnState.QUIET  # the endpoint
    d2 = Driver()
    d2.answered_turn()
    d2.speak(320)
    assert d2.session.state is TurnState.OVERLAP  # over the answer: not yet an interruption
    d2.speak(900)
    assert d2.session.state is TurnState.SPEECH  # barge_in_min_ms of speech: it is one
