"""What the copywriter writes: drafts per product brief, by model, and why drafts are dropped.

Each model writes ``--drafts`` drafts for every brief below through the real path (the
copywriter, the tool grammar for local models, the policy). Printed per model and per set:
briefs that got at least one draft, drafts kept of tries, drops by rule, seconds per brief,
and the first draft of each brief to read. The briefs are in two sets: the first six were
read while the prompt was written ("dev"); the last four were not ("held out"), so that a
prompt tuned to the first shows it on the second.

    .venv/bin/python bench/copywriter.py [--models smollm2-135m,qwen2.5-0.5b] [--drafts 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from media.copywriting.brief import Brief, limits_for
from media.copywriting.writer import Copywriter, Drafts
from media.templates import get_template
from voice.engines.factory import build_chat
from voice.engines.registry import resolve_llm
from voice.settings import LlmBackend
from workers.settings import load_settings

BRIEFS: list[tuple[str, Brief]] = [
    ("dev", Brief("Handmade ceramic mug", price="$24", store="Clay and Co")),
    ("dev", Brief("Cold brew coffee concentrate", price="$18", notes="Makes 16 cups")),
    ("dev", Brief("Linen summer shirt", price="$39", offer="Free shipping this week")),
    (
        "dev",
        Brief(
            "Sourdough bread loaf", price="$7", store="Corner Bakery", notes="Baked every morning"
        ),
    ),
    ("dev", Brief("Wireless reading lamp", price="$45", notes="Charges by USB-C, warm light")),
    ("dev", Brief("Organic honey jar", price="$12", store="Hill Farm")),
    ("held out", Brief("Leather card wallet", price="$29", notes="Holds six cards")),
    ("held out", Brief("Bamboo cutting board", price="$22", offer="Two for $40")),
    (
        "held out",
        Brief("Hand-poured soy candle", price="$16", store="Wick and Wax", notes="Lavender scent"),
    ),
    ("held out", Brief("Kids' rain boots", price="$25", notes="Sizes 5 to 12")),
]


def run_model(model: str, drafts: int, threads: int) -> list[tuple[str, Brief, Drafts]]:
    settings = load_settings()
    backend = LlmBackend(model=model, parallel=1, n_threads=threads, n_threads_batch=threads)
    resolve_llm(model, settings.model_cache)  # fails clearly when the model is not installed
    chat = build_chat(backend, timeout_s=120, cache_dir=settings.model_cache)
    c = settings.copywriter
    writer = Copywriter([chat], max_tokens=c.max_tokens, temperature=c.temperature, timeout_s=120)
    template = get_template("showcase")
    out = []
    for group, brief in BRIEFS:
        result = writer.write(brief, limits_for(template, brief.language), template, drafts)
        out.append((group, brief, result))
        first = result.drafts[0]
        print(
            f"  [{group}] {brief.product}: {result.source}, {len(result.drafts)} kept of "
            f"{result.tries} tries, {result.seconds:.1f} s; dropped {result.counts() or '-'}",
            flush=True,
        )
        print(f"      headline {first.headline!r} | cta {first.cta!r}")
        print(f"      narration {first.narration!r}")
    return out


def summary(model: str, rows: list[tuple[str, Brief, Drafts]]) -> list[dict[str, object]]:
    figures = []
    for group in ("dev", "held out"):
        mine = [r for g, _, r in rows if g == group]
        written = [r for r in mine if r.source != "template"]
        kept = sum(len(r.drafts) for r in written)
        tries = sum(r.tries for r in mine)
        rules: Counter[str] = Counter()
        for r in mine:
            rules.update(r.counts())
        figures.append(
            {
                "model": model,
                "set": group,
                "briefs": len(mine),
                "briefs_with_draft": len(written),
                "kept": kept,
                "tries": tries,
                "dropped": dict(rules),
                "median_s": statistics.median(r.seconds for r in mine),
            }
        )
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-0.5b")
    ap.add_argument("--drafts", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    table = []
    for model in args.models.split(","):
        print(f"# {model}", flush=True)
        try:
            rows = run_model(model, args.drafts, args.threads)
        except Exception as exc:  # a model not installed: say so, go on with the others
            print(f"  skipped: {exc}")
            continue
        table += summary(model, rows)
    print()
    print(
        f"{'model':<16} {'set':<9} {'briefs w/ draft':>15} {'kept/tries':>10} {'s/brief':>8}  dropped by rule"
    )
    for f in table:
        print(
            f"{f['model']:<16} {f['set']:<9} {f['briefs_with_draft']:>8}/{f['briefs']:<6} "
            f"{f['kept']:>4}/{f['tries']:<5} {f['median_s']:>8.1f}  {f['dropped'] or '-'}"
        )
    if args.json:
        args.json.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
