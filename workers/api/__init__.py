"""The merchant HTTP API for ad jobs, and the web pages that drive it.

Rooms: ``app`` (create_app), ``routes``, ``deps``, ``schemas``, ``auth`` (keys, signed links),
``limits`` (the request gate), ``errors``, ``ops`` (dashboard, operator endpoints), ``web/``.

``create_app`` builds a FastAPI app over a :class:`~workers.store.JobStore` (job records in
Redis) and a dramatiq broker (where :func:`workers.jobs.submit` enqueues the first stage).
The API never renders anything itself: it validates, stores the uploads, enqueues, and
reports what the workers wrote into the job record.

Endpoints (all JSON except files and the page; the OpenAPI schema is at ``/openapi.json``)::

    POST /v1/jobs                      multipart: photos, optional logo, copy fields -> 201 job
    GET  /v1/jobs                      my jobs, newest first (limit, offset)
    GET  /v1/jobs/{id}                 status, stage, percent, error; outputs when done
    POST /v1/jobs/{id}/cancel          409 once the job has finished
    GET  /v1/jobs/{id}/files/{name}    one output file (names from workers.jobs.outputs)
    GET  /v1/templates                 the templates a job can name
    GET  /v1/config                    what the page needs: limits, whether a key is needed
    GET  /healthz                      ok or unavailable (details: /v1/ops/health, ops key)
    GET  /                             the web page (static files under /static/)

Choices worth knowing:

* **Auth.** ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` names the merchant
  (``api.keys`` maps merchant -> key; every key is compared with ``hmac.compare_digest``).
  With no keys configured the API is open, as merchant ``local``, and only when it binds to
  a loopback address (:func:`keys_required`); otherwise ``create_app`` refuses to start.
  A merchant's view is its own: another merchant's job id is a 404, word for word the same
  as an id that does not exist.
* **Other sites** (:mod:`base.access`). Without keys the API trusts that only this machine
  reaches it, so a web page must not reach it through the visitor's browser: it answers only
  loopback ``Host`` names (DNS rebinding sends the attacker's name), refuses a state-changing
  request whose ``Origin`` is not a loopback page, and wants the :data:`CSRF_HEADER` on
  those, which no cross-site form can send (nor a cross-site fetch: a custom header needs a
  CORS preflight, which this API never grants); the page sends it, and so must a script
  (``curl -H 'X-Castwork-CSRF: 1'``). With keys, the key header does that job; the
  ``Host`` must then be one of ``api.allowed_hosts`` and an ``Origin`` the API's own.
* **Download links** carry an expiring HMAC signature when keys are in force, because a
  ``<video src>`` or a plain link cannot send a header. The signing key is the server's
  link secret (``api.link_secret``, else ``<data_dir>/link-secret``) derived per merchant,
  never a merchant's API key, which would then sit one HMAC away from every link.
* **Request size.** A request whose ``Content-Length`` is over ``api.max_request_mb`` is
  refused before a byte is read; a body without one is counted as it streams and cut off at
  the same limit. Starlette spools file parts to disk past 1 MB, so at most one capped body
  reaches memory (the photos, when they are handed to ``submit``). Requests that carry a
  body are also authenticated before the body is read, so a stranger cannot make the server
  swallow 80 MB to learn that its key is wrong.
* **Uploads are checked by content** (:func:`media.images.sniff_format`), never by name or
  claimed type; per-file size is ``media.max_image_mb``.
* **Errors** have one shape: ``{"error": {"code", "message", "field"}}``; ``message`` names
  the field (the same words as :class:`media.errors.InputError` from ``submit``).

Endpoints that touch Redis or the disk are plain ``def``: FastAPI runs them in its thread
pool, so the event loop never waits on them.
"""

from base.access import CSRF_HEADER
from workers.api.app import create_app
from workers.api.auth import LINK_SECRET_FILE, keys_required

__all__ = ["CSRF_HEADER", "LINK_SECRET_FILE", "create_app", "keys_required"]
