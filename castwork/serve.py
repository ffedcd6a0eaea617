"""`castwork serve`: the whole system on one machine, from the embedded defaults.

- **Redis**: the configured broker (a warning if it keeps no append-only file), else a Redis
  on 127.0.0.1:6379 if it keeps one (``CONFIG GET appendonly``), else one we start ourselves
  (``redis-server`` with an append-only file under ``<data_dir>/redis``, so queued jobs
  survive a restart of it; on the next free port when 6379 is taken) and stop on the way
  out. A Redis that keeps none, or will not say (CONFIG disabled or renamed), is not used:
  the job queue's durability would silently not hold. The log says which Redis and why.
- **Workers**: ``castwork worker`` child processes, restarted (with backoff) if one dies:
  dramatiq's own supervisor exits when a worker process dies, by design.
- **API + page** (uvicorn) and the **voice server** share one asyncio loop here.

SIGINT/SIGTERM stop everything in order: stop accepting, finish the voice sessions, stop
workers (dramatiq requeues what they had not finished), then our Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis

from base.errors import ConfigError
from base.redact import mask_url
from workers.broker import LOCAL_REDIS_URL, ping
from workers.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ManagedRedis:
    """A redis-server we started (None when someone else's Redis is used)."""

    url: str
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


# Ports tried after the one asked for, when it is taken by a Redis we will not use.
_SPARE_PORTS = 100
Persistence = Literal["aof", "off", "unknown"]


def persistence(url: str, *, timeout_s: float = 2.0) -> tuple[Persistence, str]:
    """Whether the Redis at ``url`` keeps an append-only file, and what it said: "aof",
    "off", or "unknown" when it will not tell (CONFIG disabled or renamed, no password)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        config = client.config_get("appendonly")
    except redis.RedisError as exc:
        return "unknown", f"CONFIG GET appendonly failed: {exc}"
    finally:
        client.close()
    appendonly = config.get("appendonly")
    if appendonly is None:
        return "unknown", "CONFIG GET appendonly answered nothing"
    return ("aof" if appendonly == "yes" else "off"), f"appendonly {appendonly}"


def ensure_redis(settings: Settings, *, port: int = 6379) -> ManagedRedis:
    """The Redis ``castwork serve`` uses (see the module's docstring); ``port`` is where a
    local one is looked for first."""
    if settings.broker.url:
        return _configured(settings.broker.url)
    workdir = settings.data_dir / "redis"
    for candidate in range(port, port + _SPARE_PORTS + 1):
        url = _local_url(candidate)
        if not _listening(candidate):
            return _start(workdir, candidate, first=port)
        kept, said = persistence(url)
        if candidate == port and kept == "aof":
            log.info("using the Redis on 127.0.0.1:%d: it keeps an append-only file", port)
            return ManagedRedis(url)
        if kept == "aof" and _redis_dir(url) == workdir.resolve():
            # Ours, left running by a serve that was killed: a second one on the same
            # append-only file would corrupt it.
            log.info("using the Redis on 127.0.0.1:%d: ours, left running before", candidate)
            return ManagedRedis(url)
        if candidate == port:
            log.warning(
                "not using the Redis on 127.0.0.1:%d: %s (%s), so jobs queued there would be "
                "lost when it restarts; starting one of our own",
                port,
                "it keeps no append-only file"
                if kept == "off"
                else "it does not say whether it keeps an append-only file",
                said,
            )
    raise ConfigError(
        "broker.url",
        f"no free port for a Redis of our own on 127.0.0.1:{port + 1}-{port + _SPARE_PORTS}",
    )


def _configured(url: str) -> ManagedRedis:
    ping(url)
    if url.startswith(("redis://", "rediss://")):
        kept, said = persistence(url)
        if kept != "aof":
            log.warning(
                "the configured broker %s keeps no append-only file (%s): jobs queued there "
                "are lost if it restarts",
                mask_url(url),
                said,
            )
    return ManagedRedis(url)


def _local_url(port: int) -> str:
    return LOCAL_REDIS_URL if port == 6379 else f"redis://127.0.0.1:{port}/0"


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return False
    except OSError:  # something there that does not accept in time: not ours to take
        return True
    return True


def _redis_dir(url: str) -> Path | None:
    """Where that Redis keeps its files (it reports the real, absolute path)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        found = client.config_get("dir").get("dir")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return Path(found).resolve() if found else None


def _start(workdir: Path, port: int, *, first: int) -> ManagedRedis:
    binary = shutil.which("redis-server")
    if binary is None:
        why = (
            f"none answers on 127.0.0.1:{first}"
            if port == first
            else f"the Redis on 127.0.0.1:{first} keeps no append-only file (or will not say)"
        )
        raise ConfigError(
            "broker.url",
            f"no broker configured, {why}, and redis-server is not installed (run ./setup.sh, "
            "or set CASTWORK_BROKER__URL to a Redis with appendonly yes)",
        )
    url = _local_url(port)
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            ping(url, timeout_s=0.5)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise ConfigError("broker.url", "could not start redis-server") from None
            time.sleep(0.1)
    log.info("started redis-server on 127.0.0.1:%d (append-only file in %s)", port, workdir)
    if port != 6379:
        log.info("workers started by hand need CASTWORK_BROKER__URL=%s", url)
    return ManagedRedis(url, proc)


@dataclass
class WorkerSupervisor:
    """Keeps ``count`` worker processes running until stopped."""

    command: list[str]
    env: dict[str, str]
    count: int = 1
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    restarts: int = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command, env=self.env, start_new_session=True)

    async def run(self, stop: asyncio.Event) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]
        backoff = 1.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            for i, proc in enumerate(self.processes):
                if proc.poll() is not None and not stop.is_set():
                    log.error(
                        "worker exited (code %s); restarting in %.0f s", proc.returncode, backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(30.0, backoff * 2)
                    self.restarts += 1
                    self.processes[i] = self._spawn()
        await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def serve(
    settings: Settings,
    *,
    voice: bool = True,
    workers: bool = True,
    api_port: int | None = None,
    voice_port: int | None = None,
) -> None:
    import os

    import uvicorn

    from castwork.cli import worker_command, worker_environ
    from workers.api import create_app
    from workers.broker import make_broker, store_url
    from workers.store import JobStore

    redis = await asyncio.to_thread(ensure_redis, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    env = dict(os.environ)
    env["CASTWORK_BROKER__URL"] = redis.url
    worker_environ(settings, None, env)
    tasks: list[asyncio.Task[None]] = []
    try:
        voice_settings = settings.voice
        if voice_port is not None:  # the page's link to the talk page names the real port
            voice_settings = voice_settings.model_copy(update={"port": voice_port})
        effective = settings.model_copy(
            update={
                "broker": settings.broker.model_copy(update={"url": redis.url}),
                "voice": voice_settings,
            }
        )
        from voice.runtime.latency import live_sessions

        app = create_app(
            effective,
            store=JobStore.from_url(store_url(effective)),
            broker=make_broker(effective),
            # The voice server runs in this process: its gauge is the live count.
            live_sessions=live_sessions if voice else None,
        )
        config = uvicorn.Config(
            app,
            host=settings.api.host,
            port=api_port or settings.api.port,
            log_level="warning",
            lifespan="on",
        )
        server = uvicorn.Server(config)
        # uvicorn catches SIGINT/SIGTERM itself while it serves; its task then ends, which
        # stops everything else below (and it re-raises the signal to our handler after).
        tasks.append(asyncio.create_task(server.serve(), name="api"))
        if workers:
            supervisor = WorkerSupervisor(worker_command(settings, None, None), env, count=1)
            tasks.append(asyncio.create_task(supervisor.run(stop), name="workers"))
        if voice:
            from voice.runtime.server import serve_forever

            tasks.append(
                asyncio.create_task(
                    serve_forever(settings, port=voice_port, stop=stop), name="voice"
                )
            )
        log.info(
            "castwork serve: page and API on http://%s:%d/  broker %s",
            settings.api.host,
            api_port or settings.api.port,
            mask_url(redis.url),
        )
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopper]  # a part ended by itself: stop it all
        stop.set()
        server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in failed:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.to_thread(redis.stop)
