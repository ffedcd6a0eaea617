"""Operator endpoints: the latency dashboard, its data, and Prometheus ``/metrics``.

    GET /dashboard          the page (static; it fetches the data below every few seconds)
    GET /v1/ops/turns       percentiles over time, stage split of recent turns, histogram,
                            outcomes and recovery counts, live sessions (from the turn log)
    GET /v1/ops/health      what /healthz keeps to itself: the Redis error, where data is kept
    GET /metrics            Prometheus text: stage histograms, recovery and turn counters,
                            live sessions (the voice server's registry; in ``castwork serve``
                            the voice server runs in this process)

These show how the service behaves for everyone, so merchant keys do not open them:
``api.ops_keys`` do (``Authorization: Bearer KEY`` or ``X-API-Key``). With no operator keys
configured they are open only when the API itself is (bound to loopback, no merchant keys).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import SecretStr

from base.access import bearer_token, is_key, page_csp
from base.metrics import metrics_text
from voice.monitoring import turnstats
from voice.monitoring.turnlog_reader import TurnLogTail
from workers.api.errors import error_responses

WEB_DIR = Path(__file__).resolve().parent / "web"
# Same rules as the merchant page: our own script and styles only.
_PAGE_CSP = page_csp()
WINDOWS = {"15m": 900.0, "1h": 3600.0, "6h": 6 * 3600.0, "24h": 86_400.0, "all": None}


class OpsDenied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class OpsContext:
    turn_log: Path
    keys: list[bytes]
    open: bool
    live_sessions: Callable[[], int | None] = lambda: None
    health: Callable[[], dict[str, Any]] = lambda: {"status": "ok"}
    clock: Callable[[], float] = time.time
    _tail: TurnLogTail | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def build(
        turn_log: Path,
        ops_keys: list[SecretStr],
        *,
        keys_required: bool,
        live_sessions: Callable[[], int | None] | None = None,
        health: Callable[[], dict[str, Any]] | None = None,
    ) -> OpsContext:
        keys = [k.get_secret_value().encode() for k in ops_keys]
        return OpsContext(
            turn_log,
            keys,
            open=not keys and not keys_required,
            live_sessions=live_sessions or (lambda: None),
            health=health or (lambda: {"status": "ok"}),
        )

    def check(self, presented: str | None) -> None:
        if self.open:
            return
        if not self.keys:
            raise OpsDenied(403, "operator endpoints are closed: set api.ops_keys to open them")
        if not presented:
            raise OpsDenied(401, "an operator key is required (Authorization: Bearer KEY)")
        if not is_key(presented, self.keys):
            raise OpsDenied(401, "not an operator key")

    def turns(self) -> list[turnstats.Turn]:
        with self._lock:  # the thread pool may run two refreshes at once
            if self._tail is None:
                self._tail = TurnLogTail(self.turn_log)
            return list(self._tail.refresh())


def _ops(request: Request) -> OpsContext:
    ctx: OpsContext = request.app.state.ops
    presented = bearer_token(request.headers.get("authorization"))
    ctx.check(presented or request.headers.get("x-api-key"))
    return ctx


Ops = Annotated[OpsContext, Depends(_ops)]
# Any route may answer 400 (the request gate, workers/api/limits.py).
router = APIRouter(responses=error_responses(400))


def page(name: str, csp: str) -> FileResponse:
    """One of our HTML pages, under its Content-Security-Policy, never cached stale."""
    return FileResponse(
        WEB_DIR / name,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": csp, "Cache-Control": "no-cache"},
    )


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> FileResponse:
    return page("dashboard.html", _PAGE_CSP)


@router.get("/v1/ops/turns", summary="Turn latency overview for the dashboard", tags=["ops"])
def ops_turns(
    ctx: Ops,
    window: Annotated[str, Query(pattern="^(15m|1h|6h|24h|all)$")] = "1h",
    points: Annotated[int, Query(ge=5, le=500)] = 60,
    recent: Annotated[int, Query(ge=1, le=500)] = 40,
) -> dict[str, Any]:
    now = ctx.clock()
    span = WINDOWS[window]
    turns = ctx.turns()
    until = now if span is not None else max(now, max((t.ts for t in turns), default=now))
    data = turnstats.overview(
        turns,
        since=None if span is None else now - span,
        until=until + (0 if span is not None else 1e-3),
        points=points,
        recent=recent,
    )
    data["window"] = window
    data["live_sessions"] = ctx.live_sessions()
    data["turn_log"] = str(ctx.turn_log)
    return data


@router.get(
    "/v1/ops/health",
    summary="Health with its details: the Redis error, the data folders",
    tags=["ops"],
    responses={503: {"description": "Redis does not answer"}},
)
def ops_health(ctx: Ops) -> JSONResponse:
    details = ctx.health()
    return JSONResponse(details, status_code=200 if details.get("status") == "ok" else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(ctx: Ops) -> Response:
    return Response(metrics_text(), media_type="text/plain; version=0.0.4")
