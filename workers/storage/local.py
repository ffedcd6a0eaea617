"""Job folders on this machine's disk (``<jobs_dir>/<merchant>/<job id>/``): the embedded
default, and what several machines share through a network mount. A stage works in the
job's folder itself; nothing is copied."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from media.folder import JobPaths
from workers.settings import Settings
from workers.storage.contracts import (
    Download,
    FolderUsage,
    JobStorage,
    LocalFile,
    Workspace,
)


class _InPlace(Workspace):
    def __init__(self, paths: JobPaths) -> None:
        self.paths = paths

    def fetch(self, path: Path) -> bool:
        return path.is_file()


class LocalStorage(JobStorage):
    def __init__(self, jobs_dir: Path) -> None:
        self.jobs_dir = jobs_dir
        self.where = str(jobs_dir)

    def folder(self, merchant: str, job_id: str) -> JobPaths:
        return JobPaths(self.jobs_dir / merchant / job_id)  # as job_root() below

    @contextlib.contextmanager
    def workspace(self, merchant: str, job_id: str, pull: Iterable[str] = ()) -> Iterator[_InPlace]:
        yield _InPlace(self.folder(merchant, job_id))

    def has(self, merchant: str, job_id: str, relative: str) -> bool:
        return (self.folder(merchant, job_id).root / relative).is_file()

    def download(
        self, merchant: str, job_id: str, relative: str, byte_range: str | None = None
    ) -> Download | None:
        path = self.folder(merchant, job_id).root / relative
        # Starlette's FileResponse answers Range requests itself.
        return LocalFile(path) if path.is_file() else None

    def merchants(self) -> set[str]:
        return _dirs(self.jobs_dir)

    def folders(self, merchant: str) -> dict[str, FolderUsage]:
        usage = {}
        for job_id in _dirs(self.jobs_dir / merchant):
            paths = self.folder(merchant, job_id)
            try:
                modified = paths.root.stat().st_mtime
            except FileNotFoundError:  # deleted meanwhile
                continue
            usage[job_id] = FolderUsage(
                bytes=_size(paths.root),
                upload_bytes=_size(paths.uploads),
                inputs_ready=paths.spec_file.exists(),
                modified=modified,
            )
        return usage

    def merchant_bytes(self, merchant: str) -> int:
        return _size(self.jobs_dir / merchant)

    def remove(self, merchant: str, job_id: str, part: str | None = None) -> None:
        folder = self.folder(merchant, job_id).root
        with contextlib.suppress(FileNotFoundError):  # gone already (another pass, the API)
            shutil.rmtree(folder / part if part else folder)


def job_root(settings: Settings, merchant: str, job_id: str) -> JobPaths:
    """A job's folder on the local disk: ``<jobs_dir>/<merchant>/<job id>``."""
    return JobPaths(settings.jobs_dir / merchant / job_id)


def _dirs(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def _size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it is gone)."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except FileNotFoundError:  # removed while we walk
                continue
    return total
