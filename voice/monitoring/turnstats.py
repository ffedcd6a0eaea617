"""Percentiles over turn records: the I/O-free core of ``castwork latency`` and the dashboard.

Input is the per-turn JSON lines that :class:`voice.runtime.latency.TurnLog` writes (one object per
finished turn). :func:`parse_lines` turns text lines into :class:`Turn` rows and counts the
ones it cannot read instead of failing on them; :func:`summarize` groups rows and computes
count, P50, P95, P99 and max of voice-to-voice and each stage; :func:`compare` puts two
summaries side by side and flags regressions. Reading files lives in :mod:`voice.monitoring.turnlog_reader`.

Percentiles are numpy's default (linear interpolation between closest ranks), so anyone can
check a figure with ``numpy.percentile`` over the same lines.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Voice-to-voice first, then the stages in the order a turn passes them.
METRICS = (
    "voice_to_voice",
    "endpointing",
    "asr",
    "llm_first_token",
    "first_piece",
    "tts_first_audio",
    "send",
    "tool_decision",
    "tool_call",
)
QUANTILES = (50, 95, 99)
GROUPINGS = ("model", "asr", "llm", "tts", "outcome", "session", "key", "arm")


class Turn(BaseModel):
    """One line of the turn log (fields this module needs; the rest is kept in ``extra``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    ts: float
    session_id: str
    turn_id: str
    outcome: str
    recovery: list[str] = []
    models: dict[str, str] = {}
    durations_ms: dict[str, float] = {}
    key: str = "-"
    arm: str = "-"
    extra: dict[str, Any] = Field(default_factory=dict)

    def group(self, by: str) -> str:
        if by == "model":
            return " ".join(f"{r}={self.models.get(r, '-')}" for r in ("asr", "llm", "tts"))
        if by in ("asr", "llm", "tts"):
            return self.models.get(by, "-")
        if by == "outcome":
            return self.outcome
        if by == "session":
            return self.session_id
        if by == "key":
            return self.key
        if by == "arm":
            return self.arm
        raise ValueError(f"unknown grouping {by!r}; one of {', '.join(GROUPINGS)}")


@dataclass(frozen=True)
class BadLine:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass
class Parsed:
    turns: list[Turn] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def parse_lines(lines: Iterable[tuple[str, int, str | bytes]]) -> Parsed:
    """``(source, line number, text)`` → turns, plus the lines that were not turn records.

    Blank lines are skipped silently; anything else unreadable (not UTF-8, not JSON, a JSON
    value that is not a turn record) is counted with its reason and skipped."""
    out = Parsed()
    for source, number, raw in lines:
        try:
            text = raw.decode() if isinstance(raw, bytes) else raw
        except UnicodeDecodeError:
            out.bad.append(BadLine(source, number, "not UTF-8"))
            continue
        if not text.strip():
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            out.bad.append(BadLine(source, number, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(data, dict):
            out.bad.append(BadLine(source, number, "not a JSON object"))
            continue
        try:
            turn = Turn.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            out.bad.append(BadLine(source, number, f"not a turn record ({where}: {first['msg']})"))
            continue
        if not all(math.isfinite(v) and v >= 0 for v in turn.durations_ms.values()):
            out.bad.append(BadLine(source, number, "not a turn record (a negative duration)"))
            continue
        out.turns.append(turn)
    return out


@dataclass(frozen=True)
class TurnFilter:
    """Which turns to keep. Times are epoch seconds (``since`` inclusive, ``until`` not)."""

    since: float | None = None
    until: float | None = None
    sessions: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()  # matches any of the turn's model names
    outcomes: frozenset[str] = frozenset()
    arms: frozenset[str] = frozenset()

    def __call__(self, turn: Turn) -> bool:
        if self.since is not None and turn.ts < self.since:
            return False
        if self.until is not None and turn.ts >= self.until:
            return False
        if self.sessions and turn.session_id not in self.sessions:
            return False
        if self.keys and turn.key not in self.keys:
            return False
        if self.models and not self.models.intersection(turn.models.values()):
            return False
        if self.outcomes and turn.outcome not in self.outcomes:
            return False
        return not (self.arms and turn.arm not in self.arms)

    def narrowed(self, since: float | None, until: float | None) -> TurnFilter:
        """The same filter inside a time window (the tighter bound wins on each side)."""
        lo = [t for t in (self.since, since) if t is not None]
        hi = [t for t in (self.until, until) if t is not None]
        return TurnFilter(
            max(lo) if lo else None,
            min(hi) if hi else None,
            self.sessions,
            self.keys,
            self.models,
            self.outcomes,
            self.arms,
        )


@dataclass(frozen=True)
class Stats:
    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @staticmethod
    def of(values: Sequence[float]) -> Stats | None:
        if not values:
            return None
        p50, p95, p99 = (float(v) for v in np.percentile(values, QUANTILES))
        return Stats(len(values), p50, p95, p99, float(max(values)))


@dataclass(frozen=True)
class Group:
    """Figures for one set of turns."""

    name: str
    turns: int
    stats: dict[str, Stats]
    outcomes: dict[str, int]
    # code -> (turns that took it, rate among these turns)
    recovery: dict[str, tuple[int, float]]


@dataclass(frozen=True)
class Summary:
    turns: int
    first_ts: float | None
    last_ts: float | None
    overall: Group
    groups: dict[str, list[Group]]  # grouping -> groups, largest first

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def group_of(name: str, turns: Sequence[Turn]) -> Group:
    stats: dict[str, Stats] = {}
    for metric in METRICS:
        values = [t.durations_ms[metric] for t in turns if metric in t.durations_ms]
        if (s := Stats.of(values)) is not None:
            stats[metric] = s
    outcomes = Counter(t.outcome for t in turns)
    taken = Counter(code for t in turns for code in set(t.recovery))
    n = len(turns)
    recovery = {code: (k, k / n) for code, k in sorted(taken.items(), key=lambda kv: -kv[1])}
    return Group(name, n, stats, dict(outcomes.most_common()), recovery)


def summarize(turns: Sequence[Turn], by: Sequence[str] = ("model", "outcome")) -> Summary:
    groups: dict[str, list[Group]] = {}
    for grouping in by:
        buckets: dict[str, list[Turn]] = {}
        for t in turns:
            buckets.setdefault(t.group(grouping), []).append(t)
        groups[grouping] = [
            group_of(name, members)
            for name, members in sorted(buckets.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ]
    return Summary(
        turns=len(turns),
        first_ts=min((t.ts for t in turns), default=None),
        last_ts=max((t.ts for t in turns), default=None),
        overall=group_of("all turns", turns),
        groups=groups,
    )


# --- comparison ---------------------------------------------------------------------------


# --- noise ----------------------------------------------------------------------------------

RESAMPLES = 1000


def percentile_change_ci(
    a: Sequence[float], b: Sequence[float], q: float, *, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% bootstrap interval of ``percentile(b, q) - percentile(a, q)``: each side resampled
    with replacement ``resamples`` times (seeded: the same logs give the same interval)."""
    rng = np.random.default_rng(seed)
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diffs = []
    for start in range(0, resamples, 100):  # in blocks: a long log must not need gigabytes
        n = min(100, resamples - start)
        pa = np.percentile(va[rng.integers(0, len(va), (n, len(va)))], q, axis=1)
        pb = np.percentile(vb[rng.integers(0, len(vb), (n, len(vb)))], q, axis=1)
        diffs.append(pb - pa)
    lo, hi = np.percentile(np.concatenate(diffs), (2.5, 97.5))
    return float(lo), float(hi)


def rate_change_ci(ka: int, na: int, kb: int, nb: int) -> tuple[float, float]:
    """95% interval of the change in a rate (kb/nb - ka/na), Agresti-Caffo: one success and
    one failure added to each side, so small counts and rates of 0 or 1 stay honest."""
    pa, pb = (ka + 1) / (na + 2), (kb + 1) / (nb + 2)
    se = math.sqrt(pa * (1 - pa) / (na + 2) + pb * (1 - pb) / (nb + 2))
    d = pb - pa
    return d - 1.96 * se, d + 1.96 * se


def _excludes_zero(ci: tuple[float, float] | None) -> bool:
    return ci is not None and (ci[0] > 0 or ci[1] < 0)


@dataclass(frozen=True)
class Delta:
    metric: str
    a: Stats | None
    b: Stats | None
    p50_change_ms: float | None
    p95_change_ms: float | None
    p95_change_pct: float | None
    regression: bool
    note: str = ""
    # 95% intervals of the changes, when the turns themselves were given to compare().
    p50_ci: tuple[float, float] | None = None
    p95_ci: tuple[float, float] | None = None

    @property
    def within_noise(self) -> bool | None:
        """True when the P95 change could be chance (its interval holds 0); None: not assessed."""
        return None if self.p95_ci is None else not _excludes_zero(self.p95_ci)


@dataclass(frozen=True)
class RateDelta:
    code: str
    a_rate: float
    b_rate: float
    regression: bool
    ci: tuple[float, float] | None = None

    @property
    def within_noise(self) -> bool | None:
        return None if self.ci is None else not _excludes_zero(self.ci)


@dataclass(frozen=True)
class Comparison:
    a_label: str
    b_label: str
    a_turns: int
    b_turns: int
    metrics: list[Delta]
    recovery: list[RateDelta]
    threshold_pct: float
    min_delta_ms: float
    rate_threshold: float
    min_count: int

    @property
    def regressions(self) -> list[str]:
        return [d.metric for d in self.metrics if d.regression] + [
            f"recovery {r.code}" for r in self.recovery if r.regression
        ]

    def to_json(self) -> dict[str, Any]:
        out = {**asdict(self), "regressions": self.regressions, "verdict": self.verdict()}
        for d, j in zip(self.metrics, out["metrics"], strict=True):
            j["within_noise"] = d.within_noise
        for r, j in zip(self.recovery, out["recovery"], strict=True):
            j["within_noise"] = r.within_noise
        return out

    def verdict(self) -> str:
        """One sentence on voice-to-voice: how B differs from A and whether that is noise."""
        d = next((d for d in self.metrics if d.metric == "voice_to_voice"), None)
        if d is None or d.a is None or d.b is None or d.p95_change_ms is None:
            return "voice-to-voice: not measured on both sides"
        change = (
            f"voice-to-voice P95 {d.a.p95:.0f} ms (A) vs {d.b.p95:.0f} ms (B), "
            f"{d.p95_change_ms:+.0f} ms"
        )
        if d.p95_ci is None:
            return change + " (noise not assessed)"
        ci = f"95% CI {d.p95_ci[0]:+.0f} to {d.p95_ci[1]:+.0f} ms"
        if d.within_noise:
            return (
                f"{change}: within noise ({ci}, {d.a.count} and {d.b.count} turns); "
                "no difference shown, more turns would narrow it"
            )
        return f"{change}: a real difference ({ci}, {d.a.count} and {d.b.count} turns)"


def compare(
    a: Summary,
    b: Summary,
    *,
    a_label: str = "A",
    b_label: str = "B",
    threshold_pct: float = 10.0,
    min_delta_ms: float = 10.0,
    rate_threshold: float = 0.05,
    min_count: int = 10,
    samples: tuple[Sequence[Turn], Sequence[Turn]] | None = None,
) -> Comparison:
    """B against A (the baseline). A metric regresses when its P95 grew by more than
    ``threshold_pct`` percent *and* by more than ``min_delta_ms`` (so a 2 ms stage going to
    3 ms is not a regression), with at least ``min_count`` values on both sides (fewer is
    noise: shown, marked, never flagged). A recovery branch regresses when its rate rose by
    more than ``rate_threshold`` (0.05 = five percentage points).

    With ``samples`` (A's and B's turns) each change also gets a 95% interval (bootstrap for
    percentiles, Agresti-Caffo for rates), and a change whose interval holds zero is said to
    be within noise. The gate itself keeps its fixed rule: a P95 over a few dozen turns rests
    on its top two or three values, so its interval is wide even for a real 3x slowdown, and
    a gate that waited for certainty would let such regressions through."""
    deltas = []
    for metric in METRICS:
        sa, sb = a.overall.stats.get(metric), b.overall.stats.get(metric)
        if sa is None or sb is None:
            deltas.append(Delta(metric, sa, sb, None, None, None, False, "missing on one side"))
            continue
        d95 = sb.p95 - sa.p95
        pct = 100.0 * d95 / sa.p95 if sa.p95 > 0 else (math.inf if d95 > 0 else 0.0)
        few = min(sa.count, sb.count) < min_count
        worse = pct > threshold_pct and d95 > min_delta_ms
        note = f"fewer than {min_count} values: not judged" if few else ""
        p50_ci = p95_ci = None
        if samples is not None:
            va = [t.durations_ms[metric] for t in samples[0] if metric in t.durations_ms]
            vb = [t.durations_ms[metric] for t in samples[1] if metric in t.durations_ms]
            p50_ci = percentile_change_ci(va, vb, 50)
            p95_ci = percentile_change_ci(va, vb, 95)
            if not few and not _excludes_zero(p95_ci):
                note = "within noise"
        deltas.append(
            Delta(
                metric, sa, sb, sb.p50 - sa.p50, d95, pct, worse and not few, note, p50_ci, p95_ci
            )
        )
    rates = []
    for code in sorted(set(a.overall.recovery) | set(b.overall.recovery)):
        ka, ra = a.overall.recovery.get(code, (0, 0.0))
        kb, rb = b.overall.recovery.get(code, (0, 0.0))
        few = min(a.turns, b.turns) < min_count
        worse = rb - ra > rate_threshold and not few
        ci = rate_change_ci(ka, a.turns, kb, b.turns) if samples is not None else None
        rates.append(RateDelta(code, ra, rb, worse, ci))
    return Comparison(
        a_label,
        b_label,
        a.turns,
        b.turns,
        deltas,
        rates,
        threshold_pct,
        min_delta_ms,
        rate_threshold,
        min_count,
    )


# --- text tables --------------------------------------------------------------------------

LABELS = {
    "voice_to_voice": "voice-to-voice",
    "endpointing": "endpointing",
    "asr": "ASR",
    "llm_first_token": "LLM first token",
    "first_piece": "first piece",
    "tts_first_audio": "TTS first audio",
    "send": "send",
    "tool_decision": "tool decided",
    "tool_call": "tool call",
}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def table(rows: list[list[str]], right: Callable[[int], bool] = lambda i: i > 0) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if right(i) else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def format_group(g: Group) -> list[str]:
    rows = [["stage (ms)", "count", "P50", "P95", "P99", "max"]]
    for metric in METRICS:
        if (s := g.stats.get(metric)) is not None:
            rows.append(
                [LABELS[metric], str(s.count), _ms(s.p50), _ms(s.p95), _ms(s.p99), _ms(s.max)]
            )
    lines = [
        f"{g.name}: {g.turns} turns; outcomes "
        + ", ".join(f"{k} {v}" for k, v in g.outcomes.items())
    ]
    lines += table(rows) if len(rows) > 1 else ["(no timed stages)"]
    if g.recovery:
        lines.append(
            "recovery: "
            + ", ".join(f"{c} {k} ({100 * r:.1f}%)" for c, (k, r) in g.recovery.items())
        )
    return lines


def format_summary(s: Summary) -> str:
    lines = format_group(s.overall)
    for grouping, groups in s.groups.items():
        if len(groups) < 2 and grouping != "model":
            continue  # one group is the overall table again
        lines += ["", f"## by {grouping}"]
        for g in groups:
            lines += ["", *format_group(g)]
    return "\n".join(lines)


def format_comparison(c: Comparison) -> str:
    noise = any(d.p95_ci is not None for d in c.metrics)
    head = ["stage (ms)", "n A", "n B", "P50 A", "P50 B", "P95 A", "P95 B", "P95 change"]
    rows = [[*head, *(["95% CI"] if noise else []), ""]]
    for d in c.metrics:
        pct = (
            "" if d.p95_change_pct is None else f"{d.p95_change_ms:+.0f} ({d.p95_change_pct:+.1f}%)"
        )
        flag = ("REGRESSION" + (f" ({d.note})" if d.note else "")) if d.regression else d.note
        ci = [f"{d.p95_ci[0]:+.0f}..{d.p95_ci[1]:+.0f}" if d.p95_ci else ""] if noise else []
        rows.append(
            [
                LABELS[d.metric],
                str(d.a.count) if d.a else "0",
                str(d.b.count) if d.b else "0",
                _ms(d.a.p50 if d.a else None),
                _ms(d.b.p50 if d.b else None),
                _ms(d.a.p95 if d.a else None),
                _ms(d.b.p95 if d.b else None),
                pct,
                *ci,
                flag,
            ]
        )
    lines = [f"A = {c.a_label} ({c.a_turns} turns)", f"B = {c.b_label} ({c.b_turns} turns)", ""]
    last = len(rows[0]) - 1
    lines += table(rows, right=lambda i: 0 < i < last)
    if c.recovery:
        lines.append("")
        lines += table(
            [["recovery", "rate A", "rate B", "change, 95% CI (points)" if noise else "", ""]]
            + [
                [
                    r.code,
                    f"{100 * r.a_rate:.1f}%",
                    f"{100 * r.b_rate:.1f}%",
                    f"{100 * (r.b_rate - r.a_rate):+.1f} ({100 * r.ci[0]:+.1f}..{100 * r.ci[1]:+.1f})"
                    if r.ci
                    else "",
                    "REGRESSION" if r.regression else ("within noise" if r.within_noise else ""),
                ]
                for r in c.recovery
            ],
            right=lambda i: i in (1, 2, 3),
        )
    lines.append("")
    rule = (
        f"rule: P95 worse by > {c.threshold_pct:g}% and > {c.min_delta_ms:g} ms (n >= {c.min_count}),"
        f" or a recovery rate up by > {100 * c.rate_threshold:g} points"
    )
    if noise:
        rule += "; 'within noise': the change's 95% CI holds 0"
    lines.append(rule)
    lines.append(c.verdict())
    regs = c.regressions
    lines.append(f"{len(regs)} regression(s): {', '.join(regs)}" if regs else "no regression")
    return "\n".join(lines)


# --- time windows -------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, now: float) -> float:
    """An instant as epoch seconds: ISO 8601 (``2026-11-21T10:00``, local time unless it
    carries an offset), epoch seconds, or an age before ``now`` (``90s``, ``15m``, ``2h``,
    ``7d``)."""
    from datetime import datetime

    t = text.strip()
    if t and t[-1] in _UNITS and t[:-1].replace(".", "", 1).isdigit():
        return now - float(t[:-1]) * _UNITS[t[-1]]
    try:
        value = float(t)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
        raise ValueError(f"bad time {text!r}: not a finite number")
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError:
        raise ValueError(
            f"bad time {text!r}: use ISO 8601 (2026-11-21T10:00), epoch seconds, "
            "or an age like 15m, 2h, 7d"
        ) from None


def parse_window(text: str, *, now: float) -> tuple[float | None, float | None]:
    """``START..END`` (either side may be empty) → (since, until)."""
    if ".." not in text:
        raise ValueError(
            f"bad time window {text!r}: write START..END, e.g. 2h..1h or 2026-11-21T09:00.."
        )
    start, end = text.split("..", 1)
    since = parse_time(start, now=now) if start.strip() else None
    until = parse_time(end, now=now) if end.strip() else None
    if since is not None and until is not None and until <= since:
        raise ValueError(f"bad time window {text!r}: it ends before it starts")
    return since, until


# --- dashboard data -----------------------------------------------------------------------

STAGES = METRICS[1:]


def overview(
    turns: Sequence[Turn],
    *,
    since: float | None,
    until: float,
    points: int = 60,
    recent: int = 40,
    histogram_bins: int = 20,
) -> dict[str, Any]:
    """What the dashboard draws, for the turns in [since, until): voice-to-voice P50/P95 per
    time bucket, the stage split of the latest turns, the voice-to-voice histogram, outcome
    and recovery counts. ``since=None`` means from the first turn."""
    window = [t for t in turns if (since is None or t.ts >= since) and t.ts < until]
    start = since if since is not None else min((t.ts for t in window), default=until)
    span = max(until - start, 1.0)
    step = span / points
    buckets: list[list[float]] = [[] for _ in range(points)]
    for t in window:
        if "voice_to_voice" in t.durations_ms:
            i = min(points - 1, int((t.ts - start) / step))
            buckets[i].append(t.durations_ms["voice_to_voice"])
    series = []
    for i, values in enumerate(buckets):
        s = Stats.of(values)
        series.append(
            {
                "t": start + (i + 0.5) * step,
                "n": len(values),
                "p50": None if s is None else round(s.p50, 1),
                "p95": None if s is None else round(s.p95, 1),
            }
        )
    v2v = [t.durations_ms["voice_to_voice"] for t in window if "voice_to_voice" in t.durations_ms]
    hist: dict[str, Any] = {"edges_ms": [], "counts": []}
    if v2v:
        hi = max(v2v)
        width = max(50.0, math.ceil(hi / histogram_bins / 50) * 50)  # round 50 ms bins
        counts, edges = np.histogram(v2v, bins=histogram_bins, range=(0, width * histogram_bins))
        hist = {"edges_ms": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    group = group_of("window", window)
    latest = sorted(window, key=lambda t: t.ts)[-recent:]
    return {
        "since": start,
        "until": until,
        "turns": len(window),
        "series": series,
        "recent": [
            {
                "ts": t.ts,
                "turn_id": t.turn_id,
                "session_id": t.session_id,
                "outcome": t.outcome,
                "recovery": t.recovery,
                "stages": {s: round(t.durations_ms[s], 1) for s in STAGES if s in t.durations_ms},
                "voice_to_voice": t.durations_ms.get("voice_to_voice"),
            }
            for t in latest
        ],
        "histogram": hist,
        "stats": {k: asdict(v) for k, v in group.stats.items()},
        "outcomes": group.outcomes,
        "recovery": {code: {"turns": k, "rate": r} for code, (k, r) in group.recovery.items()},
    }
