"""semantic_vad in the session core and the rule behind it: a pause is judged once, early;
"finished" ends the turn at once, "goes on" waits up to the eagerness's limit; speech that
resumes drops the judgement. Plus idle_timeout_ms. No models: judgements are fed back by id."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_session import HEARD, Driver, of_type, sends, starts, transcribes, types
from voice.core.actions import (
    CancelResponse,
    FinishTurn,
    JudgeText,
    JudgeTurn,
    PrimeText,
    ReleaseResponse,
)
from voice.core.session import STILL_THERE
from voice.core.turntaking import (
    BACKCHANNEL_PROMPTS,
    PATIENCE,
    is_backchannel,
    judge,
    reads_unfinished,
)
from voice.engines.contracts import Transcript

GOES_ON = Transcript("I would like to book a table and", no_speech_prob=0.01, avg_logprob=-0.2)


def semantic(d: Driver, eagerness: str = "auto", **extra: Any) -> dict[str, Any]:
    (updated,) = sends(
        d.client(
            type="session.update",
            session={
                "audio": {
                    "input": {
                        "turn_detection": {"type": "semantic_vad", "eagerness": eagerness, **extra}
                    }
                }
            },
        )
    )
    td: dict[str, Any] = updated["session"]["audio"]["input"]["turn_detection"]
    return td


def judged(d: Driver, request_id: str, probability: float | None) -> list[Any]:
    return d.take(d.session.on_turn_judged(request_id, probability, d.now))


def agent_said(d: Driver, text: str) -> None:
    """The agent's last words in the conversation (as a client adds them)."""
    d.client(
        type="conversation.item.create",
        item={
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text}],
        },
    )


def pause_asked(d: Driver) -> tuple[Any, JudgeTurn]:
    """Speak, then pause to the judging point: the speculative decode and the judgement."""
    d.speak(640)
    actions = d.pause(160)
    (spec,) = transcribes(actions)
    (asked,) = of_type(actions, JudgeTurn)
    assert len(asked.audio) == len(spec.audio) > 0  # the turn so far, ending in the pause
    return spec, asked


# --- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("I would like to book a table and", True),
        ("Tell me a story about", True),
        ("What I really want to know is...", True),
        ("If it rains tomorrow,", True),
        ("What time is it?", False),
        ("Yes.", False),
        ("Tell me about the weather", False),
        ("Tuesday at 10.", False),
        ("", False),
    ],
)
def test_transcripts_that_read_unfinished(text: str, unfinished: bool) -> None:
    assert reads_unfinished(text) is unfinished


def test_each_eagerness_is_a_threshold_and_a_wait() -> None:
    assert PATIENCE["auto"] == PATIENCE["medium"]
    high, medium, low = PATIENCE["high"], PATIENCE["medium"], PATIENCE["low"]
    assert high.threshold < medium.threshold < low.threshold
    assert high.max_wait_ms < medium.max_wait_ms < low.max_wait_ms
    assert medium.max_wait_ms > 900  # longer than the benchmark's longest mid-sentence pause
    for eagerness in ("high", "medium", "low"):
        pat, text = PATIENCE[eagerness], "What time is it?"
        assert pat.likely < pat.threshold and pat.likely_wait_ms < pat.max_wait_ms
        assert judge(pat.threshold, text, eagerness).finished
        leaning = judge(pat.threshold - 0.01, text, eagerness)
        assert (leaning.wait_ms, leaning.why) == (pat.likely_wait_ms, "model_likely")
        assert judge(pat.likely - 0.01, text, eagerness).wait_ms == pat.max_wait_ms


def test_an_unfinished_transcript_outweighs_a_confident_model() -> None:
    verdict = judge(0.99, "Please add eggs and milk and", "high")
    assert not verdict.finished and verdict.why == "transcript_unfinished"


def test_without_a_model_the_transcript_decides() -> None:
    assert judge(None, "What time is it?", "auto").finished
    assert not judge(None, "I think the problem is", "auto").finished


def test_a_short_answer_to_the_agents_question_needs_less_certainty() -> None:
    p = (PATIENCE["auto"].answer_threshold + PATIENCE["auto"].threshold) / 2
    assert not judge(p, "Two people.", "auto").finished
    assert judge(p, "Two people.", "auto", after_question=True).why == "answer"
    long = "Two people and maybe a third one later"
    assert not judge(p, long, "auto", after_question=True).finished


def test_words_the_text_model_expects_more_of_wait_however_they_sound() -> None:
    pat = PATIENCE["auto"]
    low = pat.text_threshold / 2
    verdict = judge(0.99, "I would like to book a table.", "auto", text_probability=low)
    assert (verdict.wait_ms, verdict.why) == (pat.max_wait_ms, "text_unfinished")
    assert judge(0.99, "I would like to book a table.", "auto", text_probability=0.5).finished
    # Without an audio model too.
    assert not judge(None, "What time is it", "auto", text_probability=low).finished
    # A short answer to the agent's question needs no more words, whatever the model expects.
    answer = judge(0.5, "Tuesday at ten.", "auto", after_question=True, text_probability=low)
    assert answer.why == "answer"
    for eagerness in ("high", "medium", "low"):  # each eagerness trusts the words less or more
        assert 0 < PATIENCE[eagerness].text_threshold < 0.5
    assert PATIENCE["high"].text_threshold < pat.text_threshold < PATIENCE["low"].text_threshold


# --- the core ----------------------------------------------------------------------------------


def test_semantic_vad_shows_its_own_fields() -> None:
    d = Driver()
    td = semantic(d, "high")
    assert td == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }


def test_server_vad_is_not_judged() -> None:
    d = Driver()
    d.speak(640)
    assert of_type(d.pause(512), JudgeTurn) == []


def test_finished_ends_the_turn_when_judgement_and_transcript_are_both_in() -> None:
    d = Driver()
    semantic(d)
    spec, asked = pause_asked(d)
    (held,) = starts(d.transcript(spec.request_id, HEARD))  # prepared in the pause, unsent
    assert held.held
    actions = judged(d, asked.request_id, 0.9)
    assert types(actions) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    # Released: answered with the speculative transcript, no second decode.
    assert of_type(actions, ReleaseResponse) == [ReleaseResponse(held.response_id)]
    assert transcribes(actions) == [] and starts(actions) == []
    assert held.messages[-1] == {"role": "user", "content": "what time is it"}
    assert held.turn.extra["pauses"] == [{"at_ms": 160, "p": 0.9, "verdict": "model"}]
    assert held.turn.marks["endpoint"] - held.turn.marks["speech_end"] == pytest.approx(0.16)


def test_the_judgement_may_come_before_the_transcript() -> None:
    d = Driver()
    semantic(d, "high")
    spec, asked = pause_asked(d)
    assert judged(d, asked.request_id, 0.6) == []  # finished, but not sure: the words decide
    assert "input_audio_buffer.speech_stopped" in types(d.transcript(spec.request_id, HEARD))


def test_a_sure_model_ends_the_turn_without_waiting_for_the_transcript() -> None:
    d = Driver()
    semantic(d)
    spec, asked = pause_asked(d)
    actions = judged(d, asked.request_id, PATIENCE["auto"].sure)
    assert types(actions) == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
    ]
    assert transcribes(actions) == []  # the speculative decode in flight is the final one
    (start,) = starts(d.transcript(spec.request_id, HEARD))
    assert start.turn.extra["pauses"] == [
        {"at_ms": 160, "p": PATIENCE["auto"].sure, "verdict": "model_sure"}
    ]


def texts_asked(actions: list[Any]) -> list[JudgeText]:
    return of_type(actions, JudgeText)


def test_with_a_text_model_the_words_are_read_as_soon_as_they_are_in() -> None:
    d = Driver(text_turn=True)
    semantic(d)
    spec, asked = pause_asked(d)
    # A sure sound no longer ends the turn before the words are read.
    assert judged(d, asked.request_id, 0.99) == []
    heard = Transcript("I would like to book a table.", 0.01, -0.2)
    actions = d.transcript(spec.request_id, heard)
    (read,) = texts_asked(actions)
    assert (read.request_id, read.text, read.before) == (asked.request_id, heard.text, None)
    assert "input_audio_buffer.speech_stopped" not in types(actions)
    # The model expects more words: the pause waits to the eagerness's limit.
    assert d.take(d.session.on_text_judged(read.request_id, 0.01, d.now)) == []
    pause = d.session.open_turn.extra["pauses"][0]  # type: ignore[union-attr]
    assert pause == {"at_ms": 160, "p": 0.99, "verdict": "text_unfinished", "p_text": 0.01}
    # ... and the caller goes on, in one turn.
    assert "input_audio_buffer.speech_started" not in types(d.speak(320))
    spec2 = transcribes(d.pause(160))[0]
    (asked2,) = of_type(d.actions, JudgeTurn)[-1:]
    (read2,) = texts_asked(d.transcript(spec2.request_id, HEARD))
    assert judged(d, asked2.request_id, 0.95) == []  # waits for the words' reading
    actions = d.take(d.session.on_text_judged(read2.request_id, 0.6, d.now))
    assert "input_audio_buffer.speech_stopped" in types(actions)
    assert types(d.actions).count("input_audio_buffer.committed") == 1


def test_the_text_model_reads_an_answer_after_the_agents_question() -> None:
    d = Driver(text_turn=True)
    semantic(d)
    agent_said(d, "Which day suits you?")
    spec, asked = pause_asked(d)
    (read,) = texts_asked(d.transcript(spec.request_id, Transcript("Tuesday.", 0.01, -0.2)))
    assert read.before == "Which day suits you?"
    judged(d, asked.request_id, 0.5)
    actions = d.take(d.session.on_text_judged(read.request_id, 0.01, d.now))
    assert "input_audio_buffer.speech_stopped" in types(actions)  # a short answer: done


def test_the_agents_words_are_read_ahead_while_the_caller_speaks() -> None:
    d = Driver(text_turn=True)
    semantic(d)
    assert of_type(d.speak(640), PrimeText) == []  # the agent has said nothing yet
    d.pause(2000)
    agent_said(d, "Which day suits you?")
    assert of_type(d.speak(640), PrimeText) == [PrimeText("Which day suits you?")]
    # Not without a text model, nor with server_vad (nothing reads the words then).
    for driver in (Driver(), Driver(text_turn=True)):
        if driver.session.config.text_turn:
            driver.client(
                type="session.update",
                session={"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
            )
        else:
            semantic(driver)
        agent_said(driver, "Which day suits you?")
        assert of_type(driver.speak(640), PrimeText) == []


def test_a_failed_or_stale_text_reading_leaves_the_other_signals_to_decide() -> None:
    d = Driver(text_turn=True)
    semantic(d)
    spec, asked = pause_asked(d)
    (read,) = texts_asked(d.transcript(spec.request_id, HEARD))
    assert d.take(d.session.on_text_judged("eot_stale", 0.0, d.now)) == []
    assert judged(d, asked.request_id, 0.95) == []
    actions = d.take(d.session.on_text_judged(read.request_id, None, d.now))
    assert "input_audio_buffer.speech_stopped" in types(actions)
    # Nothing usable heard: no words to read, the sound decides at once.
    d2 = Driver(text_turn=True)
    semantic(d2)
    spec2, asked2 = pause_asked(d2)
    assert texts_asked(d2.transcript(spec2.request_id, Transcript("", no_speech_prob=0.9))) == []
    assert "input_audio_buffer.speech_stopped" in types(judged(d2, asked2.request_id, 0.95))


def test_goes_on_waits_to_the_eagerness_limit_then_ends_the_turn() -> None:
    d = Driver()
    semantic(d, "high")
    spec, asked = pause_asked(d)
    d.transcript(spec.request_id, HEARD)
    assert judged(d, asked.request_id, 0.1) == []
    limit = PATIENCE["high"].max_wait_ms
    quiet = d.pause(limit - 160 - 32 - 1)
    assert "input_audio_buffer.speech_stopped" not in types(quiet)
    actions = d.pause(64)
    assert "input_audio_buffer.speech_stopped" in types(actions)
    (held,) = starts(d.actions)  # prepared while it waited, released now
    assert of_type(actions, ReleaseResponse) == [ReleaseResponse(held.response_id)]
    assert held.turn.extra["pauses"][0]["verdict"] == "model_unfinished"


def test_a_model_that_only_leans_to_finished_ends_the_turn_at_the_shorter_wait() -> None:
    d = Driver()
    semantic(d)
    spec, asked = pause_asked(d)
    d.transcript(spec.request_id, HEARD)
    pat = PATIENCE["auto"]
    assert judged(d, asked.request_id, pat.likely) == []
    assert types(d.pause(pat.likely_wait_ms - 160 - 32)) == []
    assert "input_audio_buffer.speech_stopped" in types(d.pause(32))


def test_an_unfinished_transcript_keeps_listening_and_speech_resuming_joins_the_parts() -> None:
    d = Driver()
    semantic(d)
    spec, asked = pause_asked(d)
    d.transcript(spec.request_id, GOES_ON)
    assert judged(d, asked.request_id, 0.95) == []
    assert types(d.pause(500)) == []  # still the same turn, 660 ms into the pause
    assert types(d.speak(320)) == []  # no speech_started: the turn goes on
    spec2, asked2 = transcribes(d.pause(192))[0], of_type(d.actions, JudgeTurn)[-1]
    assert asked2.request_id != asked.request_id
    assert len(spec2.audio) > len(spec.audio)  # the whole turn, both parts
    d.transcript(spec2.request_id, HEARD)
    assert "input_audio_buffer.speech_stopped" in types(judged(d, asked2.request_id, 0.9))
    assert sum(t == "input_audio_buffer.committed" for t in (e["type"] for e in d.sent)) == 1


def test_a_judgement_for_a_pause_that_speech_ended_is_ignored() -> None:
    d = Driver()
    semantic(d)
    spec, asked = pause_asked(d)
    d.speak(320)
    d.transcript(spec.request_id, HEARD)
    assert judged(d, asked.request_id, 0.99) == []
    assert d.session.open_turn is not None


def test_without_a_model_the_shell_answers_none_and_the_transcript_decides() -> None:
    d = Driver()
    semantic(d)
    spec, asked = pause_asked(d)
    d.transcript(spec.request_id, HEARD)
    actions = judged(d, asked.request_id, None)
    assert "input_audio_buffer.speech_stopped" in types(actions)
    assert starts(d.actions)[-1].turn.extra["pauses"][0] == {
        "at_ms": 160,
        "p": None,
        "verdict": "transcript",
    }


def test_a_short_answer_after_the_agents_question_ends_sooner() -> None:
    d = Driver()
    semantic(d)
    agent_said(d, "How many people?")
    spec, asked = pause_asked(d)
    d.transcript(spec.request_id, Transcript("Two.", no_speech_prob=0.01, avg_logprob=-0.2))
    p = PATIENCE["auto"].answer_threshold + 0.01
    assert "input_audio_buffer.speech_stopped" in types(judged(d, asked.request_id, p))


def test_switching_back_to_server_vad_uses_the_silence_rule() -> None:
    d = Driver()
    semantic(d)
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
    )
    d.speak(640)
    actions = d.pause(512)
    assert of_type(actions, JudgeTurn) == []
    assert "input_audio_buffer.speech_stopped" in types(actions)
    assert of_type(actions, ReleaseResponse) == []


# --- idle timeout --------------------------------------------------------------------------------


def test_idle_timeout_prompts_the_user_once() -> None:
    d = Driver()
    d.client(
        type="session.update",
        session={"audio": {"input": {"turn_detection": {"idle_timeout_ms": 6000}}}},
    )
    start = d.answered_turn()
    d.done(start.response_id)
    assert d.pause(5888) == []  # frame-aligned pauses keep answered_turn() aligned
    actions = d.pause(160)
    assert types(actions) == ["input_audio_buffer.timeout_triggered"]
    (prompt,) = starts(actions)
    assert prompt.canned_text == STILL_THERE and prompt.turn.extra["idle_timeout"]
    d.done(prompt.response_id)
    assert starts(d.pause(11_968)) == []  # once, until the user speaks again
    start = d.answered_turn()
    d.done(start.response_id)
    assert types(d.pause(6112)) == ["input_audio_buffer.timeout_triggered"]


def test_no_idle_prompt_while_the_user_speaks_or_without_the_setting() -> None:
    d = Driver()
    start = d.answered_turn()
    d.done(start.response_id)
    assert d.pause(20_000) == []
    with pytest.raises(Exception, match="greater than or equal to 5000"):
        d.session.config.turn_detection.model_validate({"idle_timeout_ms": 100})  # type: ignore[union-attr]


# --- backchannels and barge-in ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "backchannel"),
    [
        ("Uh-huh.", True),
        ("Mm-hmm.", True),
        ("Okay.", True),
        ("Yeah, right.", True),
        ("I see.", True),
        ("Stop.", False),
        ("No.", False),
        ("Wait, that's wrong.", False),
        ("Okay, but what about Tuesday?", False),
        ("", False),
        # A hum Whisper spelled as letters (heard in bench/barge_in.py) is one.
        ("M-H-N.", True),
        ("Mm-", True),
        ("Uh-h", True),
        ("Mhm, okay.", True),
        # A clipped word is not: "n" was "Hang on." without the filler prompt.
        ("n", False),
        ("Um, no.", False),
        # Phrases count whole; their words alone may ask or object.
        ("Makes sense.", True),
        ("Oh, of course.", True),
        ("That's right, yeah.", True),
        ("Of course not.", False),
        ("That's wrong.", False),
        ("All of it?", False),
        ("Go back.", False),
    ],
)
def test_what_counts_as_a_backchannel(text: str, backchannel: bool) -> None:
    assert is_backchannel(text) is backchannel


def speaking_agent(d: Driver) -> Any:
    start = d.answered_turn()
    assert d.session.response_active
    return start


def test_a_backchannel_over_the_answer_is_let_go() -> None:
    d = Driver()
    start = speaking_agent(d)
    sent = len(d.sent)
    assert d.speak(320) == []  # not announced, nothing cancelled: maybe "uh-huh"
    (spec,) = transcribes(d.pause(160))
    assert spec.turn is None  # no turn record for what may be nothing
    assert spec.prompt is None  # vad.backchannel_prompt is off by default
    assert d.transcript(spec.request_id, Transcript("Uh-huh.", 0.01, -0.2)) == []
    assert d.session.open_turn is None and d.session.response_active
    assert len(d.sent) == sent  # the client heard of none of it
    assert start.turn.extra["backchannels"] == 1 and "barge_in" not in start.turn.recovery
    assert d.pause(2000) == []  # and no turn ends later


def test_only_speech_over_the_answer_is_decoded_after_the_filler_prompt() -> None:
    d = Driver(backchannel_prompt=True)
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    assert spec.prompt is None  # a turn of its own: nothing to bias
    speaking_agent(d)
    d.speak(320)
    (spec2,) = transcribes(d.pause(160))
    assert spec2.prompt == BACKCHANNEL_PROMPTS["en"]  # over the answer: read first
    d3 = Driver(backchannel_prompt=True, language="ko", languages=frozenset({"en", "ko"}))
    speaking_agent(d3)
    d3.speak(320)
    (spec3,) = transcribes(d3.pause(160))
    assert spec3.prompt is None  # no Korean fillers written: English ones would bias it


def test_noise_over_the_answer_is_let_go() -> None:
    d = Driver()
    speaking_agent(d)
    d.speak(96)
    (spec,) = transcribes(d.pause(160))
    assert d.transcript(spec.request_id, Transcript("", no_speech_prob=0.9)) == []
    assert d.session.response_active and d.session.open_turn is None


def test_short_words_over_the_answer_interrupt_it_once_heard() -> None:
    d = Driver()
    start = speaking_agent(d)
    d.speak(320)
    (spec,) = transcribes(d.pause(160))
    actions = d.transcript(spec.request_id, Transcript("Stop.", 0.01, -0.2))
    assert types(actions) == ["input_audio_buffer.speech_started"]
    assert of_type(actions, CancelResponse) == [CancelResponse(start.response_id, "turn_detected")]
    started = sends(actions)[0]
    assert started["audio_start_ms"] == 320 + 512  # where it began: not when it was announced
    assert "input_audio_buffer.speech_stopped" in types(d.pause(352))  # then a normal turn


def test_long_speech_over_the_answer_interrupts_it_without_waiting_for_words() -> None:
    d = Driver()
    start = speaking_agent(d)
    short_of_it = d.session.config.barge_in_min_ms // 32 * 32 - 32  # whole 32 ms frames
    assert d.speak(short_of_it) == []
    actions = d.speak(64)
    assert types(actions) == ["input_audio_buffer.speech_started"]
    assert CancelResponse(start.response_id, "turn_detected") in actions
    assert start.turn.recovery == ["barge_in"]


def test_speech_after_the_answer_ended_is_a_turn_at_once() -> None:
    d = Driver()
    start = speaking_agent(d)
    d.done(start.response_id)
    assert types(d.speak(64)) == ["input_audio_buffer.speech_started"]


def test_speech_that_resumes_before_the_answer_begins_is_answered_with_it() -> None:
    d = Driver()
    semantic(d)
    spec, asked = pause_asked(d)
    assert "input_audio_buffer.speech_stopped" in types(judged(d, asked.request_id, 0.99))
    assert types(d.speak(320)) == ["input_audio_buffer.speech_started"]  # went on
    actions = d.transcript(spec.request_id, Transcript("I would like to book a table", 0.01, -0.2))
    assert starts(actions) == []  # no answer to half a sentence
    (finished,) = of_type(actions, FinishTurn)
    assert finished.turn.outcome == "continued"
    spec2 = transcribes(d.pause(192))[0]
    (start,) = starts(d.transcript(spec2.request_id, Transcript("for two at seven.", 0.01, -0.2)))
    (asked2,) = of_type(d.actions, JudgeTurn)[-1:]
    assert of_type(judged(d, asked2.request_id, 0.95), ReleaseResponse)
    users = [m["content"] for m in start.messages if m["role"] == "user"]
    assert users == ["I would like to book a table", "for two at seven."]
