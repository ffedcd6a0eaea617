"""The ad-job service: the queue (``actors``, ``broker``, ``store``, ``jobs``, ``retention``,
``app`` for `dramatiq workers.app`), its ``settings``, and ``api`` (the HTTP API and its
pages)."""

__all__ = ["actors", "api", "app", "broker", "jobs", "retention", "settings", "store"]
