"""Signed webhooks when an ad job finishes, instead of polling.

A job may name a URL (``webhook_url`` on ``POST /v1/jobs``); when it ends (done, failed or
cancelled) Castwork POSTs the job view there, signed the Standard Webhooks way (headers
``webhook-id``, ``webhook-timestamp``, ``webhook-signature``: HMAC-SHA256 over
``id.timestamp.body`` with the merchant's secret, ``GET /v1/webhooks/secret``).

- :mod:`~workers.webhooks.targets`: which URLs may be called (http/https; no loopback,
  private, link-local or otherwise internal address unless ``webhooks.allow_private``),
  checked when the job is submitted and again, after DNS, at every attempt;
- :mod:`~workers.webhooks.outbox`: never lost: the job store puts a finishing job in an
  outbox in the same atomic step that finishes it, and every worker process relays the
  outbox to the queue (a crash between the two leaves the entry in the outbox);
- :mod:`~workers.webhooks.delivery`: one attempt (sign, POST, log it in the job's delivery
  log); a failed one is retried by the queue with backoff up to ``webhooks.max_attempts``.
"""
