"""Job folders in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Garage...), with
boto3: ``<bucket>/<prefix>/<merchant>/<job id>/<relative name>``.

The API and the workers may then run on different machines with different data directories:
a stage copies what it reads into a scratch folder (``<jobs_dir>/.scratch/<job id>-...``),
works there, and uploads what it wrote when it ends without an error, before its result is
recorded in Redis (a render counts as done only once its video is in the store). An
object appears whole or not at all (a PUT, or a multipart upload once it is completed), so a
worker killed mid-upload leaves no half file under the real name, as the local disk's
write-then-rename does; ``out/manifest.json``, whose presence means the job is finished, is
uploaded last. Scratch folders left by killed workers are swept by :meth:`S3Storage.sweep`.

Failures become :class:`~media.errors.StorageError`\\ s like the disk's: the store not
answering (or answering 5xx, throttling) is :class:`StoreUnavailable`, transient, retried by
the actors like a full disk; refused credentials or a missing bucket, :class:`StoreRefused`,
permanent: a deployment problem that a retry does not mend.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from media.errors import StorageError
from media.folder import JobPaths
from workers.settings import StorageSettings
from workers.storage.contracts import (
    Download,
    FolderUsage,
    JobStorage,
    Redirect,
    Stream,
    Workspace,
    is_local_only,
    relative_name,
)

S3Client = Any  # boto3's clients are made at run time; no stubs are installed

log = logging.getLogger(__name__)

SCRATCH = ".scratch"  # under jobs_dir; no merchant id starts with a dot
_CHUNK = 1 << 16
# Answers that mean "not now": the store is busy, restarting or throttling.
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError",
                    "Throttling", "RequestTimeTooSkewed"}  # fmt: skip
_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class StoreUnavailable(StorageError):
    """The object store did not answer, or answered that it cannot now (5xx, throttled)."""

    transient = True
    code = "storage_unavailable"


class StoreRefused(StorageError):
    """The object store refused us: credentials, permissions, or no such bucket."""

    code = "storage_refused"


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """botocore's exceptions as ours, saying ``what`` failed (never a key or a secret)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        raise _client_error(exc, what) from exc
    except NoCredentialsError as exc:
        raise StoreRefused(f"{what}: no credentials for the object store") from exc
    except S3UploadFailedError as exc:  # wraps a ClientError in its message only
        refused = any(c in str(exc) for c in ("AccessDenied", "NoSuchBucket", "InvalidAccessKey"))
        cls = StoreRefused if refused else StoreUnavailable
        raise cls(f"{what}: {exc}") from exc
    except (BotoCoreError, OSError) as exc:  # connection refused, timeouts, a cut stream
        raise StoreUnavailable(f"{what}: the object store does not answer ({exc})") from exc


def _client_error(exc: Any, what: str) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    message = f"{what}: the object store answered {code or status}"
    if status >= 500 or code in _TRANSIENT_CODES:
        return StoreUnavailable(message)
    return StoreRefused(message)


def _is_missing(exc: Any) -> bool:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "")) in {"404", "NoSuchKey", "NotFound"}


def make_client(settings: StorageSettings, endpoint_url: str | None = None) -> S3Client:
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or settings.endpoint_url
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        # Path-style (host/bucket/key) for self-hosted stores: their buckets have no DNS names.
        s3={"addressing_style": "path" if endpoint else "auto"},
        signature_version="s3v4",
    )
    keys: dict[str, str] = {}
    if settings.access_key is not None and settings.secret_key is not None:
        keys = {
            "aws_access_key_id": settings.access_key.get_secret_value(),
            "aws_secret_access_key": settings.secret_key.get_secret_value(),
        }
    client: S3Client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=settings.region, config=config, **keys
    )
    return client


@dataclass
class _Traffic:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def add(self, size: int, seconds: float) -> None:
        self.files, self.bytes, self.seconds = (
            self.files + 1,
            self.bytes + size,
            self.seconds + seconds,
        )

    def __str__(self) -> str:
        return f"{self.files} files ({self.bytes / 1e6:.2f} MB) in {self.seconds:.2f} s"


class _Copy(Workspace):
    """A scratch copy of part of a job's folder; :meth:`push` uploads what changed in it."""

    def __init__(self, store: S3Storage, merchant: str, job_id: str, root: Path) -> None:
        self.store, self.merchant, self.job_id = store, merchant, job_id
        self.paths = JobPaths(root)
        self.paths.make()
        self._pulled: dict[str, tuple[int, int]] = {}  # relative name -> (size, mtime_ns)
        self.fetched, self.stored = _Traffic(), _Traffic()

    def _download(self, relative: str) -> None:
        target = self.paths.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        key = self.store.key(self.merchant, self.job_id, relative)
        t0 = time.perf_counter()
        self.store.client.download_file(self.store.bucket, key, str(target))
        st = target.stat()
        self._pulled[relative] = (st.st_size, st.st_mtime_ns)
        self.fetched.add(st.st_size, time.perf_counter() - t0)

    def pull(self, part: str) -> None:
        with _errors(f"cannot read the job's {part}"):
            for relative, _ in self.store.objects(self.merchant, self.job_id, part):
                if not is_local_only(relative):
                    self._download(relative)

    def fetch(self, path: Path) -> bool:
        relative = relative_name(self.paths, path)
        from botocore.exceptions import ClientError

        with _errors(f"cannot read {path.name}"):
            try:
                self._download(relative)
            except ClientError as exc:
                if _is_missing(exc):
                    return False
                raise
        return True

    def push(self) -> None:
        """Upload every file the stage made or changed, ``out/manifest.json`` last."""
        changed: list[str] = []
        for parent, _, names in os.walk(self.paths.root):
            for name in names:
                if name.startswith("."):  # a temporary .part file of a write in progress
                    continue
                path = Path(parent) / name
                relative = relative_name(self.paths, path)
                st = path.stat()
                if is_local_only(relative) or self._pulled.get(relative) == (
                    st.st_size,
                    st.st_mtime_ns,
                ):
                    continue
                changed.append(relative)
        manifest = relative_name(self.paths, self.paths.manifest)
        changed.sort(key=lambda r: (r == manifest, r))
        for relative in changed:
            key = self.store.key(self.merchant, self.job_id, relative)
            kind = mimetypes.guess_type(relative)[0] or "application/octet-stream"
            path = self.paths.root / relative
            t0 = time.perf_counter()
            with _errors(f"cannot store {path.name}"):
                self.store.client.upload_file(
                    str(path), self.store.bucket, key, ExtraArgs={"ContentType": kind}
                )
            self.stored.add(path.stat().st_size, time.perf_counter() - t0)
        # Where a farm's time goes besides the work itself.
        log.info("job %s: fetched %s, stored %s", self.job_id, self.fetched, self.stored)


class S3Storage(JobStorage):
    def __init__(
        self, settings: StorageSettings, scratch_parent: Path, client: S3Client | None = None
    ) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.client = client or make_client(settings)
        # Presigned URLs name the host the merchant reaches the store by.
        self._presigner = (
            make_client(settings, settings.public_endpoint_url)
            if settings.public_endpoint_url
            else self.client
        )
        self.scratch = scratch_parent / SCRATCH
        where = settings.endpoint_url or "AWS"
        self.where = f"{settings.url} at {where} (scratch {self.scratch})"

    def close(self) -> None:
        """Close the clients' connection pools (sockets otherwise wait for the collector)."""
        self.client.close()
        if self._presigner is not self.client:
            self._presigner.close()

    def key(self, merchant: str, job_id: str = "", relative: str = "") -> str:
        return "/".join(p for p in (self.prefix, merchant, job_id, relative) if p)

    def check(self) -> None:
        """Raise :class:`StoreRefused`/:class:`StoreUnavailable` unless the bucket answers."""
        with _errors(f"bucket {self.bucket!r}"):
            self.client.head_bucket(Bucket=self.bucket)

    def round_trip(self) -> float:
        """Write, read back and delete a small object (outside every merchant's folder: no
        merchant id starts with a dot); the seconds it took."""
        key = self.key(".doctor", "probe")
        t0 = time.perf_counter()
        with _errors(f"bucket {self.bucket!r}"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=b"castwork" * 128)
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            self.client.delete_object(Bucket=self.bucket, Key=key)
        if body != b"castwork" * 128:
            raise StoreUnavailable(f"bucket {self.bucket!r}: an object read back differs")
        return time.perf_counter() - t0

    def objects(
        self, merchant: str, job_id: str = "", part: str = ""
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name under the job's folder, or under the merchant's without ``job_id``; the
        listing's entry) for every object there."""
        head = self.key(merchant, job_id, part) + "/"
        base = len(self.key(merchant, job_id)) + 1
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=head
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][base:], item

    @contextlib.contextmanager
    def workspace(self, merchant: str, job_id: str, pull: Iterable[str] = ()) -> Iterator[_Copy]:
        self.scratch.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=self.scratch))
        try:
            copy = _Copy(self, merchant, job_id, root)
            for part in pull:
                copy.pull(part)
            yield copy
            copy.push()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def has(self, merchant: str, job_id: str, relative: str) -> bool:
        from botocore.exceptions import ClientError

        with _errors(f"cannot look up {Path(relative).name}"):
            try:
                self.client.head_object(
                    Bucket=self.bucket, Key=self.key(merchant, job_id, relative)
                )
            except ClientError as exc:
                if _is_missing(exc):
                    return False
                raise
        return True

    def download(
        self, merchant: str, job_id: str, relative: str, byte_range: str | None = None
    ) -> Download | None:
        key = self.key(merchant, job_id, relative)
        if self.settings.downloads == "redirect":
            if not self.has(merchant, job_id, relative):
                return None
            with _errors(f"cannot sign a link to {Path(relative).name}"):
                url = self._presigner.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=self.settings.presign_s,
                )
            return Redirect(url)
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        wanted = _single_range(byte_range)
        if wanted:
            args["Range"] = wanted
        with _errors(f"cannot read {Path(relative).name}"):
            try:
                got = self.client.get_object(**args)
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                    raise
                # A range past the end: the whole file instead (a server may ignore Range).
                args.pop("Range")
                got = self.client.get_object(**args)
        content_range = got.get("ContentRange") if "Range" in args else None
        length = int(got["ContentLength"])
        size = int(content_range.rsplit("/", 1)[1]) if content_range else length
        return Stream(_chunks(got["Body"]), length, size, content_range)

    # --- retention ------------------------------------------------------------------------

    def merchants(self) -> set[str]:
        head = self.key("") + "/" if self.prefix else ""
        names: set[str] = set()
        with _errors("cannot list merchants"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=head, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    names.add(common["Prefix"][len(head) :].strip("/"))
        return names

    def folders(self, merchant: str) -> dict[str, FolderUsage]:
        usage: dict[str, FolderUsage] = {}
        with _errors("cannot list jobs"):
            for name, item in self.objects(merchant):
                job_id, _, relative = name.partition("/")
                size = int(item["Size"])
                upload = size if relative.startswith("uploads/") else 0
                was = usage.get(job_id, FolderUsage())
                usage[job_id] = FolderUsage(
                    bytes=was.bytes + size,
                    upload_bytes=was.upload_bytes + upload,
                    inputs_ready=was.inputs_ready or relative == "work/job.json",
                    modified=max(was.modified, item["LastModified"].timestamp()),
                )
        return usage

    def remove(self, merchant: str, job_id: str, part: str | None = None) -> None:
        with _errors("cannot delete the job's files"):
            keys = [{"Key": item["Key"]} for _, item in self.objects(merchant, job_id, part or "")]
            for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 at a time
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": keys[start : start + 1000], "Quiet": True},
                )

    def sweep(self, older_than_s: float) -> int:
        swept = 0
        cutoff = time.time() - older_than_s
        try:
            entries = list(os.scandir(self.scratch))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    swept += 1
        return swept


def _single_range(header: str | None) -> str | None:
    """One ``bytes=a-b`` range passed on to the store; anything else is ignored (the whole
    file is sent, as a server may)."""
    if not header:
        return None
    match = _SINGLE_RANGE.fullmatch(header.strip())
    if match is None or match.group(0) == "bytes=-":
        return None
    return match.group(0)


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(_CHUNK)
    finally:
        body.close()
