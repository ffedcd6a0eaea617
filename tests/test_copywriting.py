"""AI copy: the policy a draft must pass, the copywriter's fallbacks, the drafts endpoint, a
job that asks for copy, and the embedded model writing under the tool grammar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from media.copywriting.brief import Brief, limits_for
from media.copywriting.policy import Draft, Rejected, check
from media.copywriting.writer import Copywriter
from media.folder import JobPaths
from media.job import JobSpec
from media.pipeline import NarrationEngines, narrate_job, plan_for
from media.templates import get_template
from voice.testing.fakes import FakeChat
from workers.settings import Settings, load_settings

BRIEF = Brief(product="Handmade ceramic mug", price="$24", store="Clay and Co")
LIMITS = limits_for(get_template("showcase"), "en")
GOOD = Draft(
    headline="Handmade ceramic mugs",
    subline="Thrown and glazed by hand,  every one a little different.",
    cta="Shop now",
    narration="Meet the handmade ceramic mug from Clay and Co. Every one is glazed by hand. "
    "Yours for $24.",
)


def _writing(*drafts: Draft, **fake: object) -> FakeChat:
    """A chat model that answers each call with the next draft as write_ad's arguments."""
    calls = [("write_ad", json.dumps(vars(d))) for d in drafts]
    return FakeChat(reply="", tool_calls=calls[:1], **fake)  # type: ignore[arg-type]


def test_a_draft_within_the_facts_passes_cleaned() -> None:
    passed = check(GOOD, BRIEF, LIMITS)
    assert passed.subline == "Thrown and glazed by hand, every one a little different."
    # 24.00 is the price written otherwise: the same number.
    check(
        GOOD.__class__(**{**vars(GOOD), "narration": GOOD.narration.replace("$24", "$24.00")}),
        BRIEF,
        LIMITS,
    )


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (
            {"narration": "Handmade ceramic mugs, now 30% off. Yours for just $24 at Clay and Co."},
            "number",
        ),
        ({"subline": "Buy two, get the second one free."}, "offer"),
        ({"headline": "The best ceramic mug"}, "claim"),
        ({"cta": "Order your handmade ceramic mug today"}, "length"),
        ({"narration": "Short."}, "length"),
        ({"subline": "See www.example.com for more"}, "markup"),
        (
            {
                "headline": "수제 머그컵",
                "narration": "수제 머그컵을 만나보세요. 하나하나 손으로 만들었습니다. 작은 공방에서 정성껏 구웠습니다. 지금 24달러에 만나보세요.",
            },
            "language",
        ),
        (
            {
                "headline": "Fresh and bright",
                "narration": "Something lovely for your morning table, glazed by hand at Clay and Co.",
            },
            "product",
        ),
    ],
)
def test_a_draft_that_states_more_than_the_facts_is_rejected(
    change: dict[str, str], rule: str
) -> None:
    with pytest.raises(Rejected) as caught:
        check(Draft(**{**vars(GOOD), **change}), BRIEF, LIMITS)
    assert caught.value.rule == rule, caught.value


def test_an_offer_may_be_announced_when_the_merchant_gave_one() -> None:
    brief = Brief(product="Handmade ceramic mug", price="$24", offer="Free gift wrap this week")
    draft = Draft(**{**vars(GOOD), "subline": "Free gift wrap with every mug this week."})
    assert check(draft, brief, LIMITS).subline.startswith("Free gift wrap")


def test_korean_limits_and_korean_drafts() -> None:
    ko = limits_for(get_template("showcase"), "ko")
    assert ko.narration_max < LIMITS.narration_max  # espeak-ng reads fewer syllables a second
    brief = Brief(product="수제 머그컵", language="ko", price="24,000원")
    draft = Draft(
        "수제 머그컵",
        "손으로 빚은 하나뿐인 컵",
        "지금 구매하기",
        "수제 머그컵을 만나보세요. 하나하나 손으로 빚었습니다. 지금 24,000원에 만나보세요.",
    )
    assert check(draft, brief, ko).headline == "수제 머그컵"
    with pytest.raises(Rejected, match="not in the facts"):
        check(
            Draft(**{**vars(draft), "narration": draft.narration.replace("24,000", "19,000")}),
            brief,
            ko,
        )


def test_copywriter_keeps_distinct_passing_drafts() -> None:
    model = _writing(GOOD)
    result = Copywriter([model]).write(BRIEF, LIMITS, get_template("showcase"), n=2)
    assert result.source == "llm:fake-llm" and result.reason is None
    assert result.drafts == [check(GOOD, BRIEF, LIMITS)]  # the same draft again is not a second
    assert model.calls == 4 and model.last_tool_choice == "write_ad"  # n x 2 tries, all forced


def test_copywriter_falls_back_to_the_template_saying_why() -> None:
    template = get_template("showcase")
    inventive = Draft(**{**vars(GOOD), "narration": GOOD.narration + " Now 50% off!"})
    dropped = Copywriter([_writing(inventive)]).write(BRIEF, LIMITS, template, n=1)
    assert dropped.source == "template" and "no draft passed" in str(dropped.reason)
    assert dropped.counts() == {"number": 2}
    (fallback,) = dropped.drafts
    assert fallback.headline == "Handmade ceramic mug" and "$24" in fallback.narration
    broken = Copywriter([FakeChat(reply="x", error_after=0)]).write(BRIEF, LIMITS, template)
    assert broken.source == "template" and "failed" in str(broken.reason)
    # The next model in the chain answers when the first fails.
    chained = Copywriter([FakeChat(reply="x", error_after=0), _writing(GOOD)]).write(
        BRIEF, LIMITS, template, n=1
    )
    assert chained.source == "llm:fake-llm" and len(chained.drafts) == 1
    assert "configured" in str(Copywriter([]).write(BRIEF, LIMITS, template).reason)


def test_a_job_that_asks_for_copy_shows_the_draft_in_every_stage(tmp_path: Path) -> None:
    settings = Settings()
    engines = NarrationEngines(settings)
    engines._cache["copywriter"] = Copywriter([_writing(GOOD)])
    paths = JobPaths(tmp_path / "job")
    paths.work.mkdir(parents=True)
    (tmp_path / "a.jpg").write_bytes(b"")
    spec = JobSpec(
        headline="Handmade ceramic mug",
        price="$24",
        store="Clay and Co",
        images=[tmp_path / "a.jpg"],
        write_copy=True,
        narration=False,
        music=False,
    )
    info = narrate_job(spec, paths, settings, engines)
    assert info.copy_source == "llm:fake-llm" and info.copy["headline"] == GOOD.headline
    plan = plan_for(spec, paths, settings, "9:16", info)  # a render stage, later, elsewhere
    texts = {layer.name: layer.text for layer in plan.layers}
    assert texts["headline@0"] == GOOD.headline and texts["cta@end"] == "Shop now"
    # No model: the template's copy from the merchant's fields, and the job says why.
    engines._cache["copywriter"] = Copywriter([])
    other = JobPaths(tmp_path / "job2")
    other.work.mkdir(parents=True)
    info = narrate_job(spec, other, settings, engines)
    assert info.copy_source == "template" and "configured" in str(info.copy_note)
    assert info.copy["headline"] == "Handmade ceramic mug"


@pytest.mark.models
def test_the_embedded_model_writes_drafts_under_the_grammar() -> None:
    from media.copywriting.writer import build_copywriter

    settings = load_settings(copywriter={"backends": [{"model": "smollm2-135m", "parallel": 1}]})
    writer = build_copywriter(settings)
    result = writer.write(BRIEF, LIMITS, get_template("showcase"), n=1)
    # Whatever it wrote: drafts that passed the policy, or the template's copy and why.
    assert result.drafts and result.seconds < 60
    if result.source == "template":
        assert result.reason and sum(result.counts().values()) >= 1
    else:
        assert result.source.startswith("llm:")
        for draft in result.drafts:
            assert check(draft, BRIEF, LIMITS) == draft
