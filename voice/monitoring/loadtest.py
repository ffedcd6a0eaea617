"""Load and soak tooling: the real voice server in its own process, clients that speak to it.

Used by ``bench/voice_latency.py``, ``bench/voice_load.py``, ``bench/voice_soak.py`` and the
short soak in the tests. The server runs as ``castwork voice`` in a child process so that what
the benchmarks measure (its resident memory, descriptors, threads, tasks; its latency under
load) is the server's alone, not shared with the clients' event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import IO

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from voice.clients.realtime import RealtimeClient, SessionRefused
from voice.monitoring import evalset, turnlog_reader, turnstats

RATE = 16_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Resources:
    """What must come back to baseline after sessions end, read off the server's /metrics."""

    rss_mb: float
    fds: int
    threads: int
    tasks: int
    sessions: int
    cpu_s: float = 0.0  # the process's user + system CPU time so far
    heap_mb: float = float("nan")  # the C heap in use (NaN without glibc): what a leak grows

    @classmethod
    def parse(cls, text: str) -> Resources:
        values = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if not s.labels
        }
        return cls(
            rss_mb=values["process_resident_memory_bytes"] / 2**20,
            fds=int(values["process_open_fds"]),
            threads=int(values["castwork_threads"]),
            tasks=int(values["castwork_asyncio_tasks"]),
            sessions=int(values["castwork_sessions_active"]),
            cpu_s=values.get("process_cpu_seconds_total", 0.0),
            heap_mb=values.get("castwork_heap_in_use_bytes", float("nan")) / 2**20,
        )


def wait_healthy(
    port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    """Until ``/healthz`` on ``port`` answers; an error naming ``log`` if ``proc`` exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not up in {timeout:.0f} s; see {log}") from None
            time.sleep(0.3)


class ServerProcess:
    """``castwork voice`` on a free loopback port with its own turn log, stopped on exit.

    ``env`` adds settings as environment variables (``CASTWORK_VOICE__MAX_SESSIONS=...``).
    """

    def __init__(self, work: Path, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.port = free_port()
        self.turn_log = work / "turns.jsonl"
        self.server_log = work / "server.log"
        self.env = {
            **os.environ,
            "CASTWORK_LOG__TURN_LOG": str(self.turn_log),
            "CASTWORK_VOICE__MAX_SESSIONS": "64",
            "CASTWORK_VOICE__MAX_SESSIONS_PER_KEY": "64",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    def start(self, timeout: float = 120.0) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.turn_log.unlink(missing_ok=True)
        self._log = open(self.server_log, "w")  # noqa: SIM115 - lives as long as the server
        castwork = Path(sys.executable).with_name("castwork")
        self.proc = subprocess.Popen(
            [str(castwork), "voice", "--port", str(self.port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_healthy(self.port, self.proc, "voice server", self.server_log, timeout)

    def resources(self) -> Resources:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return Resources.parse(r.read().decode())

    def turns(self) -> list[turnstats.Turn]:
        if not self.turn_log.exists():
            return []
        return turnlog_reader.read([self.turn_log]).turns

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class SessionResult:
    """One simulated caller: client-side voice-to-voice per completed turn (ms), the status of
    every response, and the refusal (error code) when the server would not admit it."""

    v2v_ms: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    refused: str | None = None
    close_code: int | None = None
    session_id: str | None = None


async def play_session(
    url: str,
    clips: list[evalset.Clip],
    turns: int,
    *,
    offset: int = 0,
    drop_after: int | None = None,
    barge_in: bool = False,
    linger: Callable[[], Awaitable[None]] | None = None,
) -> SessionResult:
    """Speak ``turns`` clips at real-time pace, each after the previous answer.

    ``drop_after``: on that turn, hang up right after the clip (mid-turn, while the server is
    transcribing or answering). ``barge_in``: start the next clip as soon as the answer's first
    audio arrives, talking over it. ``linger``: after the last turn, stay on the line (sending
    silence) until it returns.
    """
    result = SessionResult()
    try:
        client = await RealtimeClient.open(url)
    except SessionRefused as exc:
        result.refused, result.close_code = exc.code or "closed", exc.close_code
        return result
    result.session_id = client.events[0].event["session"]["id"] if client.events else None
    try:
        for t in range(turns):
            clip = clips[(offset + t) % len(clips)]
            after = len(client.events)
            end = await client.stream(clip.audio(), RATE)
            if drop_after == t:
                break  # the finally closes the socket mid-turn
            async with client.silence(RATE):
                if barge_in and t + 1 < turns:
                    await client.wait_for("response.output_audio.delta", after=after, timeout=60)
                    first = time.monotonic()
                    result.v2v_ms.append((first - end) * 1000)
                    continue
                done = await client.wait_for("response.done", after=after, timeout=60)
            status = done["response"]["status"]
            result.statuses.append(status)
            first_audio = next(
                (
                    r.at
                    for r in client.events[after:]
                    if r.event["type"] == "response.output_audio.delta"
                ),
                None,
            )
            if first_audio is not None and status == "completed":
                result.v2v_ms.append((first_audio - end) * 1000)
            await client.stream(np.zeros(RATE // 2, dtype=np.float32), RATE)  # a breath
        if linger is not None:
            async with client.silence(RATE):
                await linger()
    finally:
        await client.close()
    return result


@dataclass
class SoakReport:
    """Server resources before, during and after a soak; ``settled_s``: how long after the last
    session ended the server took to give everything back (None: it never did)."""

    seconds: float
    baseline: Resources
    peak: Resources
    after: Resources
    samples: list[tuple[float, Resources]]
    sessions: int
    turns: int
    dropped: int
    barge_ins: int
    refused: int
    settled_s: float | None

    def drift(self) -> dict[str, float]:
        b, a = self.baseline, self.after
        return {
            "rss_mb": round(a.rss_mb - b.rss_mb, 1),
            "heap_mb": round(a.heap_mb - b.heap_mb, 1),
            "fds": a.fds - b.fds,
            "threads": a.threads - b.threads,
            "tasks": a.tasks - b.tasks,
            "sessions": a.sessions,
        }

    def rss_slope_mb_per_min(self) -> float:
        """Least-squares RSS trend over the second half of the run: a leak keeps climbing
        after the allocator's pools have filled, a healthy server levels off."""
        return self.slope_mb_per_min("rss_mb")

    def slope_mb_per_min(self, field: str) -> float:
        """The least-squares trend of ``field`` (``rss_mb``, ``heap_mb``) over the second half
        of the run, in MiB a minute; NaN with fewer than three samples there."""
        half = [(t, getattr(r, field)) for t, r in self.samples if t >= self.seconds / 2]
        if len(half) < 3:
            return float("nan")
        t, mb = np.array(half).T
        return float(np.polyfit(t / 60, mb, 1)[0])


async def soak(
    server: ServerProcess,
    clips: list[evalset.Clip],
    seconds: float,
    *,
    concurrency: int = 2,
    every_s: float = 5.0,
) -> SoakReport:
    """Waves of ``concurrency`` callers for ``seconds``: plain two-turn calls, callers that hang
    up mid-turn, and callers that talk over the answer, in rotation. The baseline is read after
    warm-up waves in which every kind has called once, so what each kind's first call creates
    lazily (executor threads, model arenas sized by its inputs) counts in it: with a single
    warm-up wave of two callers, the first talker-over came after the baseline and its pools
    read as drift."""
    kinds = ("plain", "drop", "barge_in")

    async def wave(n: int) -> list[SessionResult]:
        calls = []
        for i in range(concurrency):
            kind = kinds[(n + i) % len(kinds)]
            calls.append(
                play_session(
                    server.url,
                    clips,
                    2,
                    offset=n * concurrency + i,
                    drop_after=1 if kind == "drop" else None,
                    barge_in=kind == "barge_in",
                )
            )
        return list(await asyncio.gather(*calls))

    warm_up = -(-len(kinds) // concurrency)  # waves until every kind has called
    for n in range(warm_up):
        await wave(n)
    baseline = await _settled(server, None, 15.0)
    assert baseline is not None
    start = time.monotonic()
    samples: list[tuple[float, Resources]] = []

    async def sample() -> None:  # during the calls too, or the peak would miss them
        while True:
            samples.append((time.monotonic() - start, await asyncio.to_thread(server.resources)))
            await asyncio.sleep(every_s)

    sampler = asyncio.create_task(sample())
    counts = {"sessions": 0, "turns": 0, "dropped": 0, "barge_ins": 0, "refused": 0}
    n = warm_up
    while time.monotonic() - start < seconds:
        results = await wave(n)
        for i, r in enumerate(results):
            kind = kinds[(n + i) % len(kinds)]
            counts["sessions"] += 1
            counts["turns"] += len(r.statuses) + (kind == "barge_in") + (kind == "drop")
            counts["dropped"] += kind == "drop"
            counts["barge_ins"] += kind == "barge_in"
            counts["refused"] += r.refused is not None
        n += 1
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    elapsed = time.monotonic() - start
    ended = time.monotonic()
    after = await _settled(server, baseline, 15.0)
    settled_s = None if after is None else round(time.monotonic() - ended, 1)
    final = after if after is not None else await asyncio.to_thread(server.resources)
    seen = [baseline, *(r for _, r in samples)]
    peak = Resources(*(max(getattr(r, f.name) for r in seen) for f in fields(Resources)))
    return SoakReport(
        seconds=round(elapsed, 1),
        baseline=baseline,
        peak=peak,
        after=final,
        samples=samples,
        settled_s=settled_s,
        **counts,
    )


async def _settled(
    server: ServerProcess, baseline: Resources | None, timeout: float
) -> Resources | None:
    """Poll until no session is open and fds, threads and tasks are back to ``baseline`` (or,
    with no baseline, stop changing); None if that does not happen within ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        now = await asyncio.to_thread(server.resources)
        if now.sessions == 0:
            counts = (now.fds, now.threads, now.tasks)
            if baseline is not None and all(
                c <= b
                for c, b in zip(
                    counts, (baseline.fds, baseline.threads, baseline.tasks), strict=True
                )
            ):
                return now
            if baseline is None and last is not None and counts == last:
                return now
            last = counts
        await asyncio.sleep(0.5)
    return None
