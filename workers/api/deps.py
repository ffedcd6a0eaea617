"""What routes depend on: the app's context and the merchant a key names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import dramatiq
from fastapi import (
    APIRouter,
    Depends,
    Request,
    Security,
)
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from workers.api.auth import Keys, Links
from workers.api.errors import error_responses, unauthorized
from workers.settings import Settings
from workers.storage import JobStorage
from workers.store import JobStore

if TYPE_CHECKING:
    from workers.api.copydesk import CopyDesk


@dataclass(frozen=True)
class ApiContext:
    """What the routes work with; one per app, kept in ``app.state.castwork``."""

    settings: Settings
    store: JobStore
    broker: dramatiq.Broker
    keys: Keys
    links: Links
    storage: JobStorage
    copydesk: CopyDesk


async def _context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.castwork
    return ctx


Ctx = Annotated[ApiContext, Depends(_context)]
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer KEY")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key: KEY")


async def _presented(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> str | None:
    """The merchant of the presented key (401 if it is wrong); None when none was sent."""
    return ctx.keys.authenticate(credentials.credentials if credentials else None, api_key)


async def _merchant(who: Annotated[str | None, Depends(_presented)]) -> str:
    if who is None:
        raise unauthorized("an API key is required (Authorization: Bearer KEY)")
    return who


Merchant = Annotated[str, Depends(_merchant)]
Presented = Annotated[str | None, Depends(_presented)]

# Any route may answer 400: the request gate refuses a malformed Content-Length or an
# untrusted Host before a route runs (workers/api/limits.py).
router = APIRouter(responses=error_responses(400))
