"""The copywriter: drafts from the configured chat chain, kept only when they pass the policy;
the template's own copy when no model can write one (never a failed job for want of one).

Blocking (each draft is a model call); run it off the event loop. Models come from the chain
in order: a backend that fails (down, timed out) is skipped for the rest of the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from media.copywriting.brief import Brief, Limits
from media.copywriting.policy import Draft, Rejected, check
from media.copywriting.prompt import TOOL_NAME, messages, tool
from media.settings import RenderSettings
from media.templates import Template, render_all_copy
from voice.engines.contracts import ChatModel, ToolCallDelta
from voice.errors import EngineError

log = logging.getLogger(__name__)

# Tries per draft asked for: small models break a rule often enough that one try each would
# often come back empty-handed; more tries cost seconds each on 2 cores.
TRIES_PER_DRAFT = 2
MAX_DRAFTS = 5


@dataclass(frozen=True)
class Drafts:
    """What a request for copy got: drafts that passed, by whom, and what was dropped."""

    drafts: list[Draft]
    source: str  # "llm:<model>" or "template"
    reason: str | None = None  # why the template's copy is offered instead
    rejected: list[str] = field(default_factory=list)  # "rule: message" per dropped draft
    seconds: float = 0.0
    tries: int = 0  # model calls made (drafts kept, rejected or repeated, and failures)

    def counts(self) -> dict[str, int]:
        """Dropped drafts by rule: what to measure a model by."""
        return dict(Counter(r.split(":", 1)[0] for r in self.rejected))


def template_draft(template: Template, brief: Brief) -> Draft:
    """The template's copy for these facts: the product as headline, the notes as subline."""
    cta = "지금 구매하기" if brief.language == "ko" else "Shop now"
    fields = {
        "headline": brief.product,
        "description": brief.notes,
        "price": brief.price,
        "cta": cta,
        "store": brief.store,
        "language": brief.language,
    }
    copy = render_all_copy(template, brief.language, fields)
    return Draft(
        headline=copy.headline,
        subline=copy.subline or brief.offer or "",
        cta=copy.cta,
        narration=copy.narration,
    )


class Copywriter:
    def __init__(
        self,
        chain: Sequence[ChatModel],
        *,
        max_tokens: int = 320,
        temperature: float = 0.8,
        timeout_s: float = 60.0,
    ) -> None:
        self._chain = list(chain)
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._timeout_s = timeout_s

    def write(self, brief: Brief, limits: Limits, template: Template, n: int = 3) -> Drafts:
        """Up to ``n`` distinct drafts that pass the policy, or the template's copy."""
        n = max(1, min(n, MAX_DRAFTS))
        started = time.monotonic()
        deadline = started + self._timeout_s
        kept: list[Draft] = []
        rejected: list[str] = []
        failures: list[str] = []
        source = ""
        tries = 0
        for model in self._chain:
            in_a_row = 0  # failures: two in a row and the model is skipped (down, not unlucky)
            for attempt in range(n * TRIES_PER_DRAFT):
                if len(kept) >= n or time.monotonic() >= deadline or in_a_row >= 2:
                    break
                tries += 1
                try:
                    raw = self._ask(model, brief, limits, attempt, deadline)
                    in_a_row = 0
                    draft = check(raw, brief, limits)
                except Rejected as exc:
                    rejected.append(f"{exc.rule}: {exc}")
                    continue
                except (EngineError, TimeoutError) as exc:
                    # A call cut off, or written wrong (a small model put a control character
                    # in a JSON string): this draft is lost; the model may do better next time.
                    in_a_row += 1
                    failures.append(f"{model.name}: {exc or 'timed out'}")
                    log.warning("copywriter: %s failed (%s)", model.name, exc)
                    continue
                if all(
                    draft.headline != d.headline or draft.narration != d.narration for d in kept
                ):
                    kept.append(draft)
                    source = f"llm:{model.name}"
            if kept:
                break
        seconds = time.monotonic() - started
        if kept:
            return Drafts(kept, source, rejected=rejected, seconds=seconds, tries=tries)
        if not self._chain:
            reason = "no copywriter model is configured"
        elif failures and not rejected:
            reason = "the copywriter model failed: " + "; ".join(failures)
        else:
            reason = f"no draft passed the checks ({len(rejected)} dropped)"
        return Drafts(
            [template_draft(template, brief)],
            "template",
            reason=reason,
            rejected=rejected,
            seconds=seconds,
            tries=tries,
        )

    def _ask(
        self, model: ChatModel, brief: Brief, limits: Limits, attempt: int, deadline: float
    ) -> Draft:
        left = max(0.1, deadline - time.monotonic())
        arguments = asyncio.run(
            asyncio.wait_for(self._call(model, brief, limits, attempt), timeout=left)
        )
        try:
            data = json.loads(arguments)
            return Draft(
                headline=str(data["headline"]),
                subline=str(data["subline"]),
                cta=str(data["cta"]),
                narration=str(data["narration"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            # Counted like any rule a draft breaks: a remote model may answer off-schema.
            raise Rejected("shape", f"not the tool's arguments: {exc}") from None

    async def _call(self, model: ChatModel, brief: Brief, limits: Limits, attempt: int) -> str:
        parts: list[str] = []
        async for piece in model.stream(
            messages(brief, limits, variant=attempt),
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            tools=[tool(limits)],
            tool_choice=TOOL_NAME,
            parallel_tool_calls=False,
        ):
            if isinstance(piece, ToolCallDelta) and piece.index == 0:
                parts.append(piece.arguments)
        return "".join(parts)


def build_copywriter(settings: RenderSettings) -> Copywriter:
    """The copywriter ``settings`` describe (no model: an empty chain, template copy)."""
    from voice.engines.factory import build_chat

    c = settings.copywriter
    chain = [
        build_chat(b, timeout_s=c.timeout_s, cache_dir=settings.model_cache) for b in c.backends
    ]
    return Copywriter(
        chain,
        max_tokens=c.max_tokens,
        temperature=c.temperature,
        timeout_s=c.timeout_s,
    )
