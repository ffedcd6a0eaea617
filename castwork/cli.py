"""The `castwork` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from base.errors import CastworkError, ConfigError
from base.logs import configure_logging
from workers.settings import Settings, load_settings

if TYPE_CHECKING:
    from voice.learning.cases import CaseStore
    from voice.monitoring.turnstats import Comparison, Parsed, Turn, TurnFilter

Command = Callable[[argparse.Namespace, Settings], int]


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from castwork.doctor import report, run_checks

    only = set(args.only.split(",")) if args.only else None
    results = run_checks(settings, only=only)
    print(report(results))
    return 0 if all(r.ok for r in results) else 1


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    from base.redact import redacted

    # SecretStr fields dump as '**********'; redacted() masks what is not one: passwords in
    # URLs (broker, job store, LLM servers) and keys in an experiment arm's overrides.
    print(json.dumps(redacted(json.loads(settings.model_dump_json())), indent=2))
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    """List the models the settings resolve to (assembling split weights on first use), or
    serve them (``serve``)."""
    if args.action == "serve":
        from voice.modelserver.app import serve

        serve(settings, host=args.host, port=args.port)
        return 0
    from voice.engines.registry import (
        ResolvedModel,
        resolve_asr,
        resolve_llm,
        resolve_tts,
        resolve_vad,
    )

    refs: list[tuple[str, str, Callable[[str], ResolvedModel]]] = [
        ("asr", settings.asr.model, lambda r: resolve_asr(r, settings.model_cache))
    ]
    if settings.asr.fallback_model:
        refs.append(
            (
                "asr fallback",
                settings.asr.fallback_model,
                lambda r: resolve_asr(r, settings.model_cache),
            )
        )
    refs += [
        ("llm", b.model, lambda r: resolve_llm(r, settings.model_cache))
        for b in settings.llm.backends
        if b.kind == "gguf"
    ]
    if settings.tts.engine == "piper":
        refs.append(("tts", settings.tts.voice, resolve_tts))
    refs.append(("vad", settings.vad.model, resolve_vad))
    for role, ref, resolve in refs:
        m = resolve(ref)
        print(f"{role:<13} {m.ref:<14} {m.source:<40} {m.licence:<11} {m.path}")
    return 0


def cmd_voice(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from voice.runtime.server import serve_forever

    asyncio.run(serve_forever(settings, host=args.host, port=args.port))
    return 0


def cmd_talk(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    from pathlib import Path

    from voice.clients.talk import talk

    wav = Path(args.wav)
    if not wav.is_file():
        print(f"castwork: no such file: {wav}", file=sys.stderr)
        return 2
    url = args.url or f"ws://127.0.0.1:{settings.voice.port}/v1/realtime"
    out = Path(args.out) if args.out else wav.with_suffix(".reply.wav")
    try:
        return asyncio.run(talk(wav, url=url, api_key=args.api_key, out=out))
    except (OSError, ValueError) as exc:
        print(f"castwork: {exc}", file=sys.stderr)
        return 1


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    """Render one job file directly: no broker, no workers; a progress bar on stderr."""
    from pathlib import Path

    from tqdm import tqdm

    from media.folder import JobPaths
    from media.job import load_job_file, parse_job
    from media.pipeline import run_job

    job_file = Path(args.job)
    spec = load_job_file(job_file)
    if args.formats:
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        spec = parse_job({**spec.model_dump(), "formats": formats})
    out = Path(args.out)
    stages = ["prepare", "narrate", *(f"render {a}" for a in spec.formats), "finalize"]
    # Rendering is most of the time; the bar is weighted so it moves at an even pace.
    weights = {s: (10.0 if s.startswith("render") else 1.0) for s in stages}
    weights["narrate"] = 2.0
    total = sum(weights.values())
    done_before = {s: sum(weights[t] for t in stages[: stages.index(s)]) for s in stages}
    with tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}", disable=args.quiet) as bar:

        def progress(stage: str, share: float) -> None:
            bar.set_description(stage)
            target = 100 * (done_before[stage] + weights[stage] * share) / total
            bar.update(max(0.0, round(target, 1) - bar.n))

        manifest = run_job(spec, JobPaths(out), settings, progress=progress)
    for item in manifest.outputs:
        print(
            f"{item.format:>5}  {out / 'out' / item.video}  "
            f"{item.width}x{item.height} {item.fps or 0:.0f} fps {item.duration_s or 0:.2f} s"
        )
    print(f"preview  {out / 'out' / manifest.preview}")
    return 0


def worker_command(settings: Settings, processes: int | None, threads: int | None) -> list[str]:
    from workers.actors import QUEUE

    return [
        sys.executable, "-m", "dramatiq", "workers.app:broker",
        "--processes", str(processes or settings.jobs.processes),
        "--threads", str(threads or settings.jobs.threads),
        "--queues", QUEUE,
    ]  # fmt: skip


def worker_environ(settings: Settings, threads: int | None, env: MutableMapping[str, str]) -> None:
    """What dramatiq reads from the environment only: how many messages a process holds."""
    held = (threads or settings.jobs.threads) * settings.jobs.prefetch_per_thread
    env.setdefault("dramatiq_queue_prefetch", str(held))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Become a dramatiq worker for ad jobs (exec: signals go straight to dramatiq)."""
    import os

    from workers.broker import broker_url, ping

    try:
        ping(broker_url(settings))  # a clear error now beats dramatiq's retry loop
        if settings.storage.url:  # and beats every job failing with it
            from workers.storage.s3 import S3Storage

            S3Storage(settings.storage, settings.jobs_dir).check()
    except (OSError, CastworkError) as exc:
        print(f"castwork: {exc}", file=sys.stderr)
        return 1
    if args.config:
        os.environ["CASTWORK_CONFIG"] = str(args.config)
    cmd = worker_command(settings, args.processes, args.threads)
    worker_environ(settings, args.threads, os.environ)
    os.execv(cmd[0], cmd)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Everything on one machine: voice server, API and page, workers, and Redis if needed."""
    import asyncio

    from castwork.serve import serve

    try:
        asyncio.run(
            serve(
                settings,
                voice=not args.no_voice,
                workers=not args.no_workers,
                api_port=args.port,
                voice_port=args.voice_port,
            )
        )
    except OSError as exc:
        print(f"castwork: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_latency(args: argparse.Namespace, settings: Settings) -> int:
    """Percentiles per stage from turn logs; ``--compare A B`` gates on regressions."""
    import time

    from voice.monitoring import turnstats

    now = time.time()
    cache: dict[tuple[str, ...], Parsed] = {}  # each source read once, bad lines told once

    def read(paths: list[str]) -> Parsed:
        if tuple(paths) not in cache:
            cache[tuple(paths)] = _read_turn_logs(paths, settings)
        return cache[tuple(paths)]

    try:
        by = [b.strip() for b in args.by.split(",") if b.strip()]
        for b in by:
            if b not in turnstats.GROUPINGS:
                raise ValueError(f"--by {b}: one of {', '.join(turnstats.GROUPINGS)}")
        keep = turnstats.TurnFilter(
            since=turnstats.parse_time(args.since, now=now) if args.since else None,
            until=turnstats.parse_time(args.until, now=now) if args.until else None,
            sessions=frozenset(args.session or ()),
            keys=frozenset(args.key or ()),
            models=frozenset(args.model or ()),
            outcomes=frozenset(args.outcome or ()),
            arms=frozenset(args.arm or ()),
        )
        if args.compare:
            comparison = _compare(args, keep, by, read, now)
        else:
            parsed = read(args.logs)
    except (OSError, ValueError) as exc:
        print(f"castwork latency: {exc}", file=sys.stderr)
        return 2
    _report_bad(list(cache.values()))
    if args.compare:
        if args.json:
            print(json.dumps(comparison.to_json(), indent=1))
        else:
            print(turnstats.format_comparison(comparison))
        return 1 if comparison.regressions else 0
    turns = [t for t in parsed.turns if keep(t)]
    summary = turnstats.summarize(turns, by)
    try:
        arm_comparisons = _arm_comparisons(args, turns, by)
    except ValueError as exc:
        print(f"castwork latency: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = summary.to_json()
        out["bad_lines"] = len(parsed.bad)
        out["arm_comparisons"] = [c.to_json() for c in arm_comparisons]
        print(json.dumps(out, indent=1))
    elif not turns:
        print(f"no turns matched ({len(parsed.turns)} read)")
    else:
        print(turnstats.format_summary(summary))
        for c in arm_comparisons:
            print(f"\n## {c.b_label} against {c.a_label}\n")
            print(turnstats.format_comparison(c))
    return 0


def _read_turn_logs(paths: list[str], settings: Settings) -> Parsed:
    """LOG arguments ('-' is stdin), or the configured turn log and its rotations."""
    from pathlib import Path

    from voice.monitoring import turnlog_reader

    if paths:
        stdin = sys.stdin.buffer if "-" in paths else None
        return turnlog_reader.read([Path(p) for p in paths if p != "-"], stdin=stdin)
    default = settings.turn_log_path
    if not default.parent.is_dir():
        raise FileNotFoundError(f"no turn log yet at {default} (give LOG files or a directory)")
    return turnlog_reader.read(turnlog_reader.log_files(default.parent, base=default.name))


def _compare(
    args: argparse.Namespace,
    keep: TurnFilter,
    by: list[str],
    read: Callable[[list[str]], Parsed],
    now: float,
) -> Comparison:
    """Each side of ``--compare``: a log path, or a START..END window over the LOG arguments."""
    from pathlib import Path

    from voice.monitoring import turnstats

    summaries, sides = [], []
    for spec in args.compare:
        if Path(spec).exists() or spec == "-":
            parsed, side = read([spec]), keep
        elif ".." in spec:
            parsed, side = read(args.logs), keep.narrowed(*turnstats.parse_window(spec, now=now))
        else:
            raise ValueError(f"--compare {spec}: neither a log path nor a START..END window")
        turns = [t for t in parsed.turns if side(t)]
        if not turns:
            raise ValueError(f"--compare {spec}: no turns match")
        summaries.append(turnstats.summarize(turns, by))
        sides.append(turns)
    return turnstats.compare(
        summaries[0],
        summaries[1],
        a_label=args.compare[0],
        b_label=args.compare[1],
        threshold_pct=args.threshold,
        min_delta_ms=args.min_delta_ms,
        rate_threshold=args.rate_threshold / 100,
        min_count=args.min_count,
        samples=(sides[0], sides[1]),
    )


def _arm_comparisons(
    args: argparse.Namespace, turns: list[Turn], by: list[str]
) -> list[Comparison]:
    """Each experiment arm against the baseline arm (--baseline, else the first by name)."""
    from voice.monitoring import turnstats

    arms: dict[str, list[Turn]] = {}
    for t in turns:
        arms.setdefault(t.arm, []).append(t)
    if "arm" not in by or len(arms) < 2:
        return []
    base = args.baseline or sorted(arms)[0]
    if base not in arms:
        raise ValueError(f"--baseline {base}: no turns in that arm ({', '.join(sorted(arms))})")
    return [
        turnstats.compare(
            turnstats.summarize(arms[base], ()),
            turnstats.summarize(arms[name], ()),
            a_label=f"arm {base}",
            b_label=f"arm {name}",
            threshold_pct=args.threshold,
            min_delta_ms=args.min_delta_ms,
            rate_threshold=args.rate_threshold / 100,
            min_count=args.min_count,
            samples=(arms[base], arms[name]),
        )
        for name in sorted(arms)
        if name != base
    ]


def _case_store(args: argparse.Namespace, settings: Settings) -> CaseStore:
    from pathlib import Path

    from voice.learning.cases import CaseStore

    c = settings.capture
    root = Path(args.dir) if args.dir else settings.cases_dir
    return CaseStore(root, max_cases=c.max_cases, max_age_days=c.max_age_days)


def cmd_jobs_reap(args: argparse.Namespace, settings: Settings) -> int:
    """One retention pass now (workers run one every jobs.reap_every_s)."""
    from workers.broker import store_url
    from workers.retention import Reaper
    from workers.store import JobStore

    print(Reaper(settings, JobStore.from_url(store_url(settings))).run())
    return 0


def cmd_cases_list(args: argparse.Namespace, settings: Settings) -> int:
    """Captured failure cases: how many, why, with or without audio."""
    from collections import Counter

    store = _case_store(args, settings)
    cases = [d for _, d in store.cases()]
    reasons = Counter(r for d in cases for r in d.get("reasons", []))
    arms = Counter(str(d.get("arm", "-")) for d in cases)
    with_audio = sum(1 for d in cases if d.get("audio"))
    if args.json:
        print(
            json.dumps(
                {
                    "dir": str(store.root),
                    "cases": len(cases),
                    "with_audio": with_audio,
                    "reasons": dict(reasons.most_common()),
                    "arms": dict(arms.most_common()),
                },
                indent=1,
            )
        )
        return 0
    print(f"{len(cases)} cases in {store.root} ({with_audio} with audio)")
    for reason, n in reasons.most_common():
        print(f"  {reason:<16} {n}")
    if len(arms) > 1:
        print("by arm: " + ", ".join(f"{a} {n}" for a, n in arms.most_common()))
    return 0


def cmd_cases_export(args: argparse.Namespace, settings: Settings) -> int:
    """Cases with audio → a folder `castwork eval` reads (WAV + reference text each)."""
    from pathlib import Path

    from voice.learning.cases import export

    store = _case_store(args, settings)
    if not store.folders():
        print(f"castwork cases: no cases in {store.root}", file=sys.stderr)
        return 1
    reference: Callable[[Any], str] | None = None
    if args.reference != "none":
        from voice.engines.factory import build_asr

        judge = build_asr(settings, args.reference)
        reference = lambda audio: judge.transcribe(audio).text.strip()  # noqa: E731

    out = Path(args.out_dir)
    try:
        result = export(
            store,
            out,
            reference=reference,
            only=args.reason or (),
            progress=lambda line: print(f"  {line}", file=sys.stderr),
        )
    except OSError as exc:  # DIR is a file, unwritable, or the disk is full
        print(f"castwork cases: cannot write the set to {out}: {exc}", file=sys.stderr)
        return 1
    skipped = ", ".join(f"{n} {why}" for why, n in result.skipped.items()) or "none"
    source = (
        "the cases' own transcripts" if reference is None else f"transcribed by {args.reference}"
    )
    print(f"{result.written} clips written to {out} (references: {source}); skipped: {skipped}")
    if result.written:
        print(f"check the references, then: castwork eval {out} --asr tiny.en base")
    return 0 if result.written else 1


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Play a set of user turns through real sessions; WER, latency, recovery, intelligibility."""
    import asyncio
    import time
    from pathlib import Path

    from voice.monitoring import evalset
    from voice.monitoring.evaluate import Arm, evaluate, format_report, report_json

    arms = [Arm.parse(a) for a in args.arm or ()]
    arms += [Arm(m, {"asr.model": m}) for m in args.asr or ()]
    if not arms:
        arms = [Arm("configured")]
    if args.set_dir:
        try:
            clips = evalset.load(Path(args.set_dir))
        except (OSError, ValueError) as exc:
            print(f"castwork eval: {exc}", file=sys.stderr)
            return 2
    elif args.language == "ko":
        from voice.engines.factory import build_espeak

        print("building the bundled Korean set (once, espeak-ng ko)...", file=sys.stderr)
        clips = evalset.build(
            build_espeak("ko"), settings.data_dir / "evalset-bundled-ko", evalset.KOREAN
        )
    else:
        from voice.engines.factory import build_tts

        print("building the bundled set (once)...", file=sys.stderr)
        clips = evalset.build(
            build_tts(settings), settings.data_dir / "evalset-bundled", evalset.BUNDLED
        )
    if args.limit:
        clips = clips[: args.limit]
    out = (
        Path(args.out) if args.out else settings.data_dir / "eval" / time.strftime("%Y%m%d-%H%M%S")
    )
    try:  # now, not after the arms ran for minutes
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"castwork eval: cannot write the report to {out}: {exc}", file=sys.stderr)
        return 2
    judge = None if args.judge == "none" else args.judge
    scores, results = asyncio.run(
        evaluate(
            settings,
            clips,
            arms,
            out,
            judge=judge,
            warmup=args.warmup,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
            language=None if args.language == "en" else args.language,
        )
    )
    if args.json:
        print(json.dumps(report_json(scores, results), indent=1))
    else:
        print(format_report(scores, results, args.language))
        print(f"\nreport: {out / 'report.json'}  replies: {out}/<arm>/replies/")
    return 0


def _report_bad(parsed: Sequence[Parsed]) -> None:
    bad = [b for p in parsed for b in p.bad]
    if bad:
        shown = "; ".join(str(b) for b in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        print(
            f"castwork latency: skipped {len(bad)} unreadable line(s): {shown}{more}",
            file=sys.stderr,
        )


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="castwork", description=__doc__)
    parser.add_argument(
        "--config", help="TOML settings file (default: $CASTWORK_CONFIG or ./castwork.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="load every configured engine once and smoke-test it")
    p.add_argument(
        "--only", help="comma-separated subset: vad,asr,turn,llm,tts,ffmpeg,broker,storage"
    )
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("voice", help="serve the OpenAI-Realtime-compatible voice WebSocket")
    p.add_argument("--host", help="bind address (default: settings voice.host)")
    p.add_argument("--port", type=int, help="port (default: settings voice.port)")
    p.set_defaults(func=cmd_voice)

    p = sub.add_parser(
        "talk", help="stream a WAV to a voice server like a microphone; save and time the reply"
    )
    p.add_argument("wav", help="16-bit PCM WAV file")
    p.add_argument("--url", help="ws://HOST:PORT/v1/realtime (default: the local server)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY")
    p.add_argument("--out", help="where to save the reply audio (default: FILE.reply.wav)")
    p.set_defaults(func=cmd_talk)

    p = sub.add_parser("render", help="render one ad job (YAML) directly, without a broker")
    p.add_argument("job", help="job file: template, headline, price, cta, images, ...")
    p.add_argument("--out", required=True, help="output folder (outputs land in OUT/out/)")
    p.add_argument("--formats", help="comma-separated subset of 9:16,1:1,16:9")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "serve", help="run everything: voice server, ad API and page, workers, local Redis"
    )
    p.add_argument("--port", type=int, help="API and page port (default: settings api.port)")
    p.add_argument("--voice-port", type=int, help="voice port (default: settings voice.port)")
    p.add_argument("--no-voice", action="store_true", help="ads only: no voice server")
    p.add_argument("--no-workers", action="store_true", help="no workers (they run elsewhere)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run dramatiq workers for ad jobs on the configured broker")
    p.add_argument("--processes", type=int, help="worker processes (default: jobs.processes)")
    p.add_argument("--threads", type=int, help="threads per process (default: jobs.threads)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "latency",
        help="P50/P95/P99/max per stage from turn logs; --compare A B to catch regressions",
        description=(
            "Reads per-turn JSON-lines logs (files, directories, '-' for stdin; rotated and "
            "gzipped files too; default: the configured turn log and its rotations)."
        ),
    )
    p.add_argument("logs", nargs="*", metavar="LOG", help="turn log file or directory, or -")
    p.add_argument("--since", help="from this time: ISO 8601, epoch, or an age (15m, 2h, 7d)")
    p.add_argument("--until", help="up to this time (same forms)")
    p.add_argument("--session", action="append", help="only this session id (repeatable)")
    p.add_argument("--key", action="append", help="only this key id, e.g. key-1a2b3c4d")
    p.add_argument("--model", action="append", help="only turns that used this model")
    p.add_argument("--outcome", action="append", help="only this outcome (spoken, no_speech...)")
    p.add_argument("--arm", action="append", help="only this experiment arm")
    p.add_argument(
        "--by",
        default="model,outcome",
        help="groupings, comma-separated: "
        + ", ".join(("model", "asr", "llm", "tts", "outcome", "session", "key", "arm")),
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--baseline",
        metavar="ARM",
        help="with --by arm: the arm the others are compared with (default: first by name)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="B against baseline A: each a log path or a START..END window over LOG; "
        "exit 1 on a regression",
    )
    p.add_argument("--threshold", type=float, default=10.0, help="P95 regression, percent (10)")
    p.add_argument(
        "--min-delta-ms", type=float, default=10.0, help="and at least this many ms (10)"
    )
    p.add_argument(
        "--rate-threshold", type=float, default=5.0, help="recovery-rate rise, in points (5)"
    )
    p.add_argument(
        "--min-count",
        type=whole_number(1),
        default=10,
        help="fewer values than this are not judged (10)",
    )
    p.set_defaults(func=cmd_latency)

    p = sub.add_parser(
        "eval",
        help="play recorded user turns through real sessions: WER, latency, recovery, "
        "reply intelligibility; arms side by side",
    )
    p.add_argument(
        "set_dir",
        nargs="?",
        metavar="SET_DIR",
        help="folder of WAV files, each with a .txt reference beside it (default: the bundled set)",
    )
    p.add_argument(
        "--asr", nargs="+", metavar="MODEL", help="one arm per ASR model, e.g. --asr tiny.en base"
    )
    p.add_argument(
        "--arm",
        action="append",
        metavar="NAME:SETTING=VALUE;...",
        help="an arm with settings overrides, e.g. 'fast:vad.silence_duration_ms=300' (repeatable)",
    )
    p.add_argument(
        "--language",
        default="en",
        help="sessions ask for this language (settings.languages; default en); with no "
        "SET_DIR, ko plays the bundled Korean set",
    )
    p.add_argument("--judge", default="base", help="Whisper that hears the replies back, or none")
    p.add_argument(
        "--warmup", type=whole_number(0), default=1, help="unscored turns first, per arm (1)"
    )
    p.add_argument("--limit", type=whole_number(1), help="only the first N clips")
    p.add_argument("--out", help="report folder (default: <data_dir>/eval/<time>)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "cases", help="captured failure cases (capture.enabled): list them or export an eval set"
    )
    cases = p.add_subparsers(dest="cases_command", required=True, metavar="{list,export}")
    c = cases.add_parser("list", help="how many cases, and why")
    c.add_argument("--dir", help="cases folder (default: capture.dir or <data_dir>/cases)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cases_list)
    c = cases.add_parser(
        "export",
        help="cases with audio -> WAV + reference text, a set `castwork eval` reads",
    )
    c.add_argument("out_dir", metavar="DIR")
    c.add_argument("--dir", help="cases folder (default: capture.dir or <data_dir>/cases)")
    c.add_argument("--reason", action="append", help="only cases with this reason (repeatable)")
    c.add_argument(
        "--reference",
        default="base",
        help="Whisper model that writes draft references, or 'none' to use the cases' own "
        "transcripts (default: base)",
    )
    c.set_defaults(func=cmd_cases_export)

    p = sub.add_parser("jobs", help="ad-job housekeeping")
    jobs = p.add_subparsers(dest="jobs_command", required=True, metavar="{reap}")
    c = jobs.add_parser(
        "reap", help="one retention pass now: expired jobs, uploads, quotas, stranded jobs"
    )
    c.set_defaults(func=cmd_jobs_reap)

    p = sub.add_parser("config", help="print the resolved settings (secrets masked)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "models",
        help="resolve the configured models and print where they are; or serve them",
        description="`castwork models` lists the configured models; `castwork models serve` "
        "serves them over OpenAI-compatible HTTP (/v1/chat/completions, "
        "/v1/audio/transcriptions, /v1/audio/speech, /v1/models).",
    )
    p.add_argument("action", nargs="?", choices=["list", "serve"], default="list")
    p.add_argument("--host", help="serve: bind address (default: settings model_server.host)")
    p.add_argument("--port", type=int, help="serve: port (default: settings model_server.port)")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"castwork: bad {exc}", file=sys.stderr)
        return 2
    configure_logging(level=settings.log.level, json_lines=settings.log.json_lines)
    func: Command = args.func
    try:
        return func(args, settings)
    except CastworkError as exc:
        print(f"castwork: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
