"""What the API, the actors and retention ask of a job-file store, whatever keeps the files.

A stage works on a local folder (ffmpeg, Pillow and the models read and write files), so a
store lends one: :meth:`JobStorage.workspace` brings the parts of a job's folder the stage
reads (``pull``), yields it as :class:`~media.folder.JobPaths`, and when the stage ends
without an error keeps what it wrote. On the local disk that folder *is* the job's folder
and nothing moves; on an object store it is a scratch copy, gone after the stage.

Everything the store keeps about a job is under its folder's relative names (``uploads/...``,
``work/job.json``, ``out/ad-9x16-<digest>.mp4``), the same on every store.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from media.folder import JobPaths

# What each stage reads of a job's folder (its own outputs are checked or fetched by name).
NARRATE_PARTS = ("uploads", "inputs", "work")
RENDER_PARTS = ("inputs", "work")
FINALIZE_PARTS = ("work", "out")
# Files a stage makes for itself and that no other stage reads: never copied to a store.
LOCAL_ONLY = ("work/layers",)


@dataclass(frozen=True)
class FolderUsage:
    """One job folder as retention sees it."""

    bytes: int = 0  # everything in it
    upload_bytes: int = 0  # uploads/
    inputs_ready: bool = False  # work/job.json: prepare is done, the uploads are not read again
    modified: float = 0.0  # Unix time of its latest change (an orphan's age)


@dataclass(frozen=True)
class LocalFile:
    """A download served from this machine's disk."""

    path: Path


@dataclass(frozen=True)
class Redirect:
    """A download the merchant fetches from the store itself (a presigned URL)."""

    url: str


@dataclass(frozen=True)
class Stream:
    """A download passed through the API from the store, whole or one byte range."""

    chunks: Iterator[bytes]
    length: int  # of what is sent
    size: int  # of the whole file
    content_range: str | None = None  # "bytes 0-99/1000" for a range (answer 206)


Download = LocalFile | Redirect | Stream


class Workspace(abc.ABC):
    """A job's folder on this machine for the length of one stage."""

    paths: JobPaths

    @abc.abstractmethod
    def fetch(self, path: Path) -> bool:
        """Bring one file of the job's folder here if the store has it (a stage's own output,
        which it then finds and does not make again); whether it is here now."""


class JobStorage(abc.ABC):
    """Where job folders are kept: :class:`~workers.storage.local.LocalStorage` or
    :class:`~workers.storage.s3.S3Storage`."""

    #: Said in logs and the operator's health page (no secrets).
    where: str

    @abc.abstractmethod
    def workspace(
        self, merchant: str, job_id: str, pull: Iterable[str] = ()
    ) -> AbstractContextManager[Workspace]:
        """The job's folder with ``pull`` (top-level folder names) in it; what the stage
        writes is kept when it ends without an error, and only then."""

    @abc.abstractmethod
    def has(self, merchant: str, job_id: str, relative: str) -> bool:
        """Whether the job's folder holds ``relative`` (e.g. ``out/manifest.json``)."""

    @abc.abstractmethod
    def download(
        self, merchant: str, job_id: str, relative: str, byte_range: str | None = None
    ) -> Download | None:
        """How to hand ``relative`` to a merchant (``byte_range``: the request's Range
        header, honoured where the store can); None when there is no such file."""

    # --- retention ----------------------------------------------------------------------

    @abc.abstractmethod
    def merchants(self) -> set[str]:
        """Names with job folders (unchecked: the caller keeps to valid merchant ids)."""

    @abc.abstractmethod
    def folders(self, merchant: str) -> dict[str, FolderUsage]:
        """Every job folder of ``merchant``, by name (job id, unchecked)."""

    def merchant_bytes(self, merchant: str) -> int:
        """Bytes kept for ``merchant``'s jobs."""
        return sum(f.bytes for f in self.folders(merchant).values())

    @abc.abstractmethod
    def remove(self, merchant: str, job_id: str, part: str | None = None) -> None:
        """Delete the job's folder, or one top-level ``part`` of it (``uploads``); a folder
        already gone is no error."""

    def sweep(self, older_than_s: float) -> int:
        """Delete scratch copies left by stages that never ended (a killed worker) and are
        older than ``older_than_s``; how many. Nothing to do where nothing is copied."""
        return 0


def relative_name(paths: JobPaths, path: Path) -> str:
    """``path`` inside the job's folder as the store names it (``out/thumb-9x16.jpg``)."""
    return PurePosixPath(path.relative_to(paths.root)).as_posix()


def is_local_only(relative: str) -> bool:
    return any(relative == p or relative.startswith(p + "/") for p in LOCAL_ONLY)
