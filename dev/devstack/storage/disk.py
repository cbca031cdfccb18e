"""Object bytes on disk: ``<storage_root>/<bucket>/<object name>``.

Writes go to a temporary file in the store and become visible by an atomic ``os.replace``, so a
concurrent reader sees the old bytes or the new ones, never a partial file. Deletes move the
file to a trash folder first, so a failed transaction can put it back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from devstack.storage import errors

# '#' is not allowed in bucket names, so these folders never clash with a bucket.
_TMP = "#tmp"
_TRASH = "#trash"

# storage-api's bucket-name rule (isValidBucketName), ASCII word characters only.
_BUCKET_RE = re.compile(r"^[A-Za-z0-9_!\-.*'() &$@=;:+,?]+$")
MAX_KEY_LENGTH = 1024
MAX_SEGMENT_BYTES = 255  # a file name on disk


def validate_bucket_id(bucket: str) -> str:
    if not bucket or len(bucket) > 100 or bucket in (".", "..") or not _BUCKET_RE.match(bucket):
        raise errors.invalid_bucket_name()
    return bucket


def validate_key(name: str) -> str:
    """Reject what could escape the bucket folder or that S3 keys can't hold.

    The path arrives percent-decoded once (by the ASGI server); empty, ``.`` and ``..``
    segments, absolute paths, backslashes, control characters and segments longer than a
    file name can be are refused.
    """
    if not name or len(name) > MAX_KEY_LENGTH:
        raise errors.invalid_key(name)
    if any(ord(c) < 0x20 or c in "\x7f\\" for c in name):
        raise errors.invalid_key(name)
    for segment in name.split("/"):
        if segment in ("", ".", "..") or len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise errors.invalid_key(name)
    return name


class Spool:
    """A temporary file in the store that becomes an object by an atomic rename."""

    def __init__(self, tmp_dir: Path) -> None:
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="upload-")
        self.path = Path(name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.committed = False

    def write(self, chunk: bytes) -> None:
        assert self._file is not None, "spool closed"
        self._file.write(chunk)
        self._md5.update(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def etag(self) -> str:
        return f'"{self._md5.hexdigest()}"'

    def discard(self) -> None:
        """Remove the temporary file unless it was committed (renamed away)."""
        self.close()
        if not self.committed:
            self.path.unlink(missing_ok=True)


class ObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def bucket_dir(self, bucket: str) -> Path:
        return self.root / validate_bucket_id(bucket)

    def object_path(self, bucket: str, name: str) -> Path:
        base = self.bucket_dir(bucket)
        path = base.joinpath(*validate_key(name).split("/"))
        if not path.resolve().is_relative_to(base.resolve()):  # symlinks, belt and braces
            raise errors.invalid_key(name)
        return path

    def sweep(self, older_than: float = 3600.0) -> None:
        """Remove temporary and trashed files left behind by an interrupted server."""
        cutoff = time.time() - older_than
        for folder in (self.root / _TMP, self.root / _TRASH):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                with contextlib.suppress(OSError):
                    if entry.stat().st_mtime < cutoff:
                        entry.unlink()

    def spool(self) -> Spool:
        return Spool(self.root / _TMP)

    def commit(self, spool: Spool, bucket: str, name: str) -> None:
        """Atomically publish the spooled bytes as the object (replacing an older version)."""
        spool.close()
        dest = self.object_path(bucket, name)
        for attempt in range(2):
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(spool.path, dest)
                spool.committed = True
                return
            except FileNotFoundError:
                if attempt:  # a concurrent delete pruned the folder twice in a row
                    raise
            except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
                raise errors.invalid_request(
                    f"The object name {name!r} conflicts with an existing object's folder"
                ) from exc

    def copy_into_spool(self, bucket: str, name: str) -> Spool:
        spool = self.spool()
        try:
            with open(self.object_path(bucket, name), "rb") as src:
                while chunk := src.read(1 << 20):
                    spool.write(chunk)
        except BaseException:
            spool.discard()
            raise
        return spool

    # -- deletes -------------------------------------------------------------------------------
    def trash(self, bucket: str, name: str) -> tuple[Path, Path] | None:
        """Move an object's file aside; returns (original, trashed) or None if it had none."""
        original = self.object_path(bucket, name)
        trash_dir = self.root / _TRASH
        trash_dir.mkdir(parents=True, exist_ok=True)
        trashed = trash_dir / uuid.uuid4().hex
        try:
            os.replace(original, trashed)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return original, trashed

    def restore(self, moved: list[tuple[Path, Path]]) -> None:
        for original, trashed in moved:
            with contextlib.suppress(OSError):
                original.parent.mkdir(parents=True, exist_ok=True)
                os.replace(trashed, original)

    def purge(self, bucket: str, moved: list[tuple[Path, Path]]) -> None:
        base = self.bucket_dir(bucket)
        for original, trashed in moved:
            trashed.unlink(missing_ok=True)
            self._prune(original.parent, base)

    def move(self, src: tuple[str, str], dest: tuple[str, str]) -> None:
        source = self.object_path(*src)
        target = self.object_path(*dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        self._prune(source.parent, self.bucket_dir(src[0]))

    def remove_bucket(self, bucket: str) -> None:
        shutil.rmtree(self.bucket_dir(bucket), ignore_errors=True)

    @staticmethod
    def _prune(folder: Path, stop: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) the bucket folder."""
        while folder != stop and folder.is_relative_to(stop):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
