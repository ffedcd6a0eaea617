"""Where ad jobs' files are kept: this machine's disk (the default) or an S3-compatible
object store shared by API servers and workers on many machines.

- :mod:`~workers.storage.contracts`: what the API, the actors and retention ask of a store
  (:class:`JobStorage`, a stage's :class:`Workspace`, :class:`FolderUsage`, downloads);
- :mod:`~workers.storage.local`: job folders under ``jobs_dir``;
- :mod:`~workers.storage.s3`: job folders in a bucket (boto3), worked on in scratch copies;
- :mod:`~workers.storage.seaweed`: a real S3 server (SeaweedFS) for tests, benchmarks and
  a one-machine try-out.
"""

from __future__ import annotations

from workers.settings import Settings
from workers.storage.contracts import JobStorage


def open_storage(settings: Settings) -> JobStorage:
    """The store ``storage.url`` names (the local ``jobs_dir`` when it is empty)."""
    if settings.storage.url:
        from workers.storage.s3 import S3Storage

        return S3Storage(settings.storage, settings.jobs_dir)
    from workers.storage.local import LocalStorage

    return LocalStorage(settings.jobs_dir)


__all__ = ["JobStorage", "open_storage"]
