"""Tool round-trip latency: endpoint to first answer audio for a turn that calls a server-side
tool, side by side with turns that call none, on the real `castwork voice` server.

For each LLM (a scripted OpenAI-compatible server, then the local GGUF model), two server
processes run in turn:

- ``tools``: the example order desk's HTTP tool (``examples/order_status/http_tool.py``) is
  configured as a server-side tool; callers, one after another, each ask an order question
  and a plain one (Piper-spoken clips at real-time pace, each after the previous answer). A
  turn counts as a tool turn when its record holds a tool call; the others are the no-tool
  turns of the same server (tools offered, none called).
- ``no tools``: no tool configured, the plain questions only: what a turn costs when no
  tool is even offered (the local model's prompt is shorter).

The scripted model answers at once: a tool call (``order_lookup``) when the transcript
mentions an order, the tool's result read back in words when the last message is the tool's
output, a fixed sentence otherwise. Its figures are Castwork's own cost (ASR, the tool
round trip, the second model request, TTS) with the model's time taken out; the local model's
add what it costs to decide and to read the result. Prints voice-to-voice P50/P95 (server
turn log: last speech frame in -> first answer audio out) and stage medians per group.

    .venv/bin/python bench/tool_latency.py [--turns 12] [--local-model qwen2.5-0.5b]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from base.errors import ModelError
from voice.engines.factory import build_tts
from voice.engines.registry import resolve_llm
from voice.monitoring import evalset, loadtest, turnstats
from voice.testing.fake_openai import Behaviour, FakeOpenAIServer
from workers.settings import load_settings

TOOL_QUESTIONS = (
    "Where is my order A100?",
    "Can you check on order A101 for me?",
    "Has my order A102 arrived yet?",
    "What is the status of my order A100?",
)
PLAIN_QUESTIONS = (
    "What time does the store open tomorrow?",
    "Can you tell me a short joke about cats?",
    "Recommend a good book for a long flight.",
    "How many minutes should I boil an egg?",
)
STAGES = (
    "endpointing",
    "asr",
    "tool_decision",
    "tool_call",
    "llm_first_token",
    "first_piece",
    "tts_first_audio",
)

ORDER_TOOL = {
    "name": "order_lookup",
    "description": "Look up where an order is, by its order number (a letter and three digits).",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string", "description": "The order number"}},
        "required": ["order_id"],
    },
    "side_effects": False,
    "timeout_s": 5,
}


def scripted_model(request: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """Call the order tool when asked about an order; read its result back; else a sentence."""
    messages = request.get("messages", [])
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"Here is what I found. {last.get('content', '')}", []
    user: dict[str, Any] = next((m for m in reversed(messages) if m.get("role") == "user"), {})
    text = str(user.get("content", ""))
    if request.get("tools") and "order" in text.lower():
        found = re.search(r"\b([A-Za-z])[- ]?(\d{3})\b", text)
        order_id = (found.group(1) + found.group(2)).upper() if found else "A100"
        return "", [("order_lookup", json.dumps({"order_id": order_id}))]
    # Its first clause as short as the tool answer's, so first audio compares like for like.
    return "Here is what I know. We open at nine tomorrow morning, every day of the week.", []


@contextmanager
def http_tool() -> Iterator[str]:
    """The example's HTTP tool in its own process; yields its URL."""
    port = loadtest.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.order_status.http_tool", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/order_status"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(url, data=b'{"order_id": "A100"}', method="POST")
                with urllib.request.urlopen(request, timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the example HTTP tool did not start") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def run_arm(
    work: Path, env: dict[str, str], clips: list[evalset.Clip], turns: int
) -> list[turnstats.Turn]:
    """Calls of two turns each, one after another, starting one clip later each time: an
    order question and a plain one, in both orders. (In one long call a small model answers
    later order questions from the history, made up, instead of calling again.)"""
    server = loadtest.ServerProcess(work, env=env)
    with server:
        for i in range(max(1, turns // 2)):
            asyncio.run(loadtest.play_session(server.url, clips, 2, offset=i))
        time.sleep(0.5)
        return server.turns()


def is_tool_turn(turn: turnstats.Turn) -> bool:
    return "tool_call" in turn.durations_ms


def row(llm: str, arm: str, group: str, turns: list[turnstats.Turn]) -> str:
    if not turns:
        return f"| {llm} | {arm} | {group} | 0 | – | – | | |"
    stats = turnstats.group_of(group, turns).stats
    v2v = stats.get("voice_to_voice")
    nan = float("nan")
    stages = "  ".join(f"{s} {stats[s].p50:.0f}" for s in STAGES if s in stats)
    recovery = Counter(code for t in turns for code in t.recovery)
    return (
        f"| {llm} | {arm} | {group} | {len(turns)} | {v2v.p50 if v2v else nan:.0f} | "
        f"{v2v.p95 if v2v else nan:.0f} | {stages} | {dict(recovery) or '-'} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--turns", type=int, default=12, help="turns per arm (tool arm: half of each)")
    ap.add_argument("--local-model", default="qwen2.5-0.5b", help="falls back to smollm2-135m")
    ap.add_argument(
        "--llms", nargs="+", choices=["scripted", "local"], default=["scripted", "local"]
    )
    ap.add_argument("--out", type=Path, help="keep turn logs and server logs here")
    args = ap.parse_args()

    work = args.out or Path(tempfile.mkdtemp(prefix="castwork-tool-bench-"))
    settings = load_settings()
    tts = build_tts(settings)
    mixed = evalset.build(
        tts,
        settings.data_dir / "evalset-tools",
        tuple(q for pair in zip(TOOL_QUESTIONS, PLAIN_QUESTIONS, strict=True) for q in pair),
    )
    plain = [c for c in mixed if c.text in PLAIN_QUESTIONS]
    local = args.local_model
    try:
        resolve_llm(local, settings.model_cache)
    except ModelError as exc:
        print(f"# {local} not installed ({exc.__class__.__name__}); local model: smollm2-135m")
        local = "smollm2-135m"
    print(
        f"# castwork tool round trip — {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}, {args.turns} turns per arm, server-side HTTP tool"
    )
    lines = [
        "| LLM | server | turns | n | voice-to-voice P50 ms | P95 ms | stage medians (ms) | recovery |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with http_tool() as tool_url, FakeOpenAIServer(Behaviour(script=scripted_model)) as fake:
        backends = {
            "scripted": [{"kind": "openai", "url": fake.url, "model": "scripted"}],
            "local": [{"model": local}],
        }
        tools_env = {"CASTWORK_TOOLS__HTTP": json.dumps([{**ORDER_TOOL, "url": tool_url}])}
        for llm in args.llms:
            name = "scripted server" if llm == "scripted" else local
            env = {"CASTWORK_LLM__BACKENDS": json.dumps(backends[llm])}
            turns = run_arm(work / f"{llm}-tools", {**env, **tools_env}, mixed, args.turns)
            with_tool = [t for t in turns if is_tool_turn(t)]
            without = [t for t in turns if not is_tool_turn(t)]
            lines.append(row(name, "tools", "tool called", with_tool))
            lines.append(row(name, "tools", "no tool called", without))
            print("\n".join(lines[-2:]), flush=True)
            turns = run_arm(work / f"{llm}-plain", env, plain, args.turns // 2)
            lines.append(row(name, "no tools", "plain", turns))
            print(lines[-1], flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}; logs in {work}\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
