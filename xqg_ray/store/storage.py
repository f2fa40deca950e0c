"""URI-based storage: local paths and ``s3://`` through ``pyarrow.fs``.

Every artifact is addressed by a URI string, so moving a run to object storage
is a configuration change.  Writes are atomic: local files are written to a
temporary name and renamed (the temporary file is removed when the write
fails); an S3 PUT is atomic per object already.

Failures the user can fix -- a bucket that does not exist, a full disk, a
directory without write permission, an endpoint that holds credentials -- are a
:class:`StorageError` whose one-line message names the bucket, directory or
setting and says what to do.  :func:`check_writable` checks the output location
before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import posixpath
import urllib.parse
import uuid
from typing import Any, Iterator, List, Optional, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..config import StorageConfig
from ..errors import UserError

# What S3 servers (AWS, MinIO, moto through pyarrow or boto3) say when a bucket is absent or access is refused.
_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket", "The specified bucket does not exist")
_DENIED = ("ACCESS_DENIED", "AccessDenied", "Access Denied", "InvalidAccessKeyId", "SignatureDoesNotMatch")


class StorageError(UserError):
    """Storage refused an operation for a reason the user can fix; the message names what and where."""


def bucket_of(uri: str) -> str:
    """The bucket of an ``s3://bucket/key`` URI."""
    return uri[len("s3://"):].split("/", 1)[0]


def storage_error(exc: BaseException, uri: str, action: str, nbytes: Optional[int] = None) -> StorageError:
    """``exc`` (an ``OSError`` from the filesystem or an S3 client error) as a one-line :class:`StorageError`."""
    text = " ".join(str(exc).split())  # one line, whatever the server sent
    code = getattr(exc, "errno", None)
    where = posixpath.dirname(uri) if is_remote(uri) else os.path.dirname(os.path.abspath(uri))
    size = f" ({nbytes} bytes)" if nbytes is not None else ""
    if uri.startswith("s3://") and (any(m in text for m in _NO_BUCKET) or ("Bucket '" in text and "not found" in text)):
        return StorageError(f"the bucket {bucket_of(uri)!r} (of {uri}) does not exist: create it, or fix the setting "
                            "that names it (output_dir for outputs), or storage.s3_endpoint if it points at the wrong server")
    if uri.startswith("s3://") and any(m in text for m in _DENIED):
        return StorageError(f"access denied to {uri} ({action}): check storage.access_key / storage.secret_key "
                            f"(or the AWS credential chain) and the bucket policy of {bucket_of(uri)!r}")
    if code == errno.ENOSPC:
        return StorageError(f"no space left on the device holding {where} while writing {uri}{size}: "
                            "free space there or set output_dir to a larger disk")
    if code == errno.EDQUOT:
        return StorageError(f"disk quota exceeded in {where} while writing {uri}{size}: free space or set output_dir elsewhere")
    if code in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        return StorageError(f"permission denied to {action} {uri}: make {where} writable for this user or set output_dir elsewhere")
    if code == errno.EROFS:
        return StorageError(f"{where} is on a read-only file system (while trying to {action} {uri}): set output_dir elsewhere")
    return StorageError(f"cannot {action} {uri}{size}: {text}")


@contextlib.contextmanager
def translated(uri: str, action: str, nbytes: Optional[int] = None) -> Iterator[None]:
    """Re-raise an ``OSError`` inside the block as a one-line :class:`StorageError` about ``uri``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        raise storage_error(e, uri, action, nbytes) from None


def parse_endpoint(endpoint: str) -> Tuple[str, str]:
    """(scheme, host[:port]) of ``storage.s3_endpoint``; credentials in it are refused (they would be logged)."""
    parts = urllib.parse.urlsplit(endpoint)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        masked = f"{parts.scheme}://***@{parts.netloc.rsplit('@', 1)[-1]}"
        raise StorageError(f"storage.s3_endpoint ({masked}) holds credentials: remove the user:password@ part and set "
                           "storage.access_key and storage.secret_key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) instead")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise StorageError(f"storage.s3_endpoint must look like http://host:port or https://host (got {endpoint!r})")
    return parts.scheme, parts.netloc


def is_remote(uri: str) -> bool:
    """True for a URI with a scheme other than file:// (s3://, gs:// ...)."""
    return "://" in uri and not uri.startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI (posix separators for both kinds)."""
    if is_remote(uri):
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(uri, *parts)


class Storage:
    """Opens URIs with one configured filesystem per scheme."""

    def __init__(self, cfg: Optional[StorageConfig] = None):
        self.cfg = cfg or StorageConfig()
        self._s3: Optional[pafs.FileSystem] = None

    # -- resolution ---------------------------------------------------------
    def s3(self) -> pafs.FileSystem:
        if self._s3 is None:
            kw: dict = {"region": self.cfg.s3_region}
            if self.cfg.s3_endpoint:
                scheme, host = parse_endpoint(self.cfg.s3_endpoint)
                kw.update(endpoint_override=host, scheme=scheme)
            if self.cfg.access_key:
                kw.update(access_key=self.cfg.access_key, secret_key=self.cfg.secret_key)
                if self.cfg.session_token:
                    kw["session_token"] = self.cfg.session_token
            self._s3 = pafs.S3FileSystem(**kw)
        return self._s3

    def s3_client(self) -> Any:
        """A boto3 S3 client with the same endpoint and credentials (for conditional writes, which pyarrow lacks)."""
        import boto3

        kw: dict = {"region_name": self.cfg.s3_region}
        if self.cfg.s3_endpoint:
            scheme, host = parse_endpoint(self.cfg.s3_endpoint)
            kw["endpoint_url"] = f"{scheme}://{host}"
        if self.cfg.access_key:
            kw.update(aws_access_key_id=self.cfg.access_key, aws_secret_access_key=self.cfg.secret_key)
            if self.cfg.session_token:
                kw["aws_session_token"] = self.cfg.session_token
        return boto3.client("s3", **kw)

    def resolve(self, uri: str) -> Tuple[pafs.FileSystem, str]:
        """(filesystem, path inside it) for a URI or local path."""
        if uri.startswith("s3://"):
            return self.s3(), uri[len("s3://"):]
        if uri.startswith("file://"):
            uri = uri[len("file://"):]
        if "://" in uri:
            fs, path = pafs.FileSystem.from_uri(uri)
            return fs, path
        return pafs.LocalFileSystem(), os.path.abspath(uri)

    # -- queries ------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        fs, path = self.resolve(uri)
        with translated(uri, "look up"):
            return fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self, uri: str) -> bool:
        fs, path = self.resolve(uri)
        with translated(uri, "look up"):
            return fs.get_file_info(path).type == pafs.FileType.Directory

    def list_files(self, uri: str, suffix: str = "") -> List[str]:
        """Files below a directory URI (recursive), sorted, as URIs."""
        fs, path = self.resolve(uri)
        with translated(uri, "list"):
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        out = [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)]
        prefix = uri[: len(uri) - len(path)] if uri.startswith("s3://") else ""
        return sorted(prefix + p if prefix else p for p in out)

    def list_relative(self, uri: str) -> List[str]:
        """Files below a directory URI (recursive), as sorted paths relative to it."""
        fs, path = self.resolve(uri)
        with translated(uri, "list"):
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        base = path.rstrip("/") + "/"
        return sorted(i.path[len(base):] for i in infos if i.type == pafs.FileType.File and i.path.startswith(base))

    # -- bytes --------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.resolve(uri)
        # compression=None: the default "detect" would hand back a .gz file decompressed.
        with translated(uri, "read"), fs.open_input_stream(path, compression=None) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Atomic write: readers see the old object or the new one, never half; a failed write leaves no temp file."""
        fs, path = self.resolve(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            done = False
            try:
                with translated(uri, "write", len(data)):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(tmp, "wb") as f:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                done = True
            finally:
                if not done:  # a full disk or a kill must not leave a half-written .tmp-* behind
                    with contextlib.suppress(OSError):
                        os.remove(tmp)
            return
        parent = posixpath.dirname(path)
        with translated(uri, "write", len(data)):
            if parent:
                fs.create_dir(parent, recursive=True)
            with fs.open_output_stream(path, compression=None) as f:  # one PUT: atomic per object; no gzip of .gz names
                f.write(data)

    def delete(self, uri: str) -> None:
        fs, path = self.resolve(uri)
        with translated(uri, "delete"):
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(path)
            elif info.type == pafs.FileType.File:
                fs.delete_file(path)

    # -- typed helpers ------------------------------------------------------
    def read_text(self, uri: str) -> str:
        return self.read_bytes(uri).decode("utf-8")

    def write_text(self, uri: str, text: str) -> None:
        self.write_bytes(uri, text.encode("utf-8"))

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def write_json(self, uri: str, obj: Any) -> None:
        self.write_bytes(uri, (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8"))

    def read_table(self, uri: str, columns: Optional[List[str]] = None) -> pa.Table:
        """A Parquet file or a directory of Parquet files as one table."""
        fs, path = self.resolve(uri)
        with translated(uri, "read"):
            return pq.read_table(path, filesystem=fs, columns=columns)

    def read_any_table(self, uri: str) -> pa.Table:
        """Parquet (file or directory), JSONL or TSV/CSV with a header, by extension."""
        import gzip

        base = uri[:-3] if uri.endswith(".gz") else uri
        if not base.endswith((".jsonl", ".json", ".tsv", ".csv")):
            return self.read_table(uri)
        raw = self.read_bytes(uri)
        data = io.BytesIO(gzip.decompress(raw) if uri.endswith(".gz") else raw)
        if base.endswith((".jsonl", ".json")):
            import pyarrow.json as pj

            return pj.read_json(data)
        import pyarrow.csv as pcsv

        return pcsv.read_csv(data, parse_options=pcsv.ParseOptions(delimiter="\t" if base.endswith(".tsv") else ","))

    def write_table(self, uri: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(uri, buf.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_writable(storage: Storage, root: str) -> None:
    """Preflight for an output location: the bucket exists / the directory can be made, and a file can be written there.

    Writes and deletes one small probe file under ``root``; raises a one-line
    :class:`StorageError` naming the bucket or directory otherwise.
    """
    if root.startswith("s3://"):
        fs, _ = storage.resolve(root)
        bucket = bucket_of(root)
        with translated(root, "look up"):
            found = fs.get_file_info(bucket).type != pafs.FileType.NotFound
        if not bucket or not found:
            raise StorageError(f"the bucket {bucket!r} (of output_dir {root}) does not exist: create it or fix output_dir "
                               "(or storage.s3_endpoint if it points at the wrong server)")
    probe = join(root, f".write-probe-{uuid.uuid4().hex[:8]}")
    storage.write_bytes(probe, b"probe\n")
    storage.delete(probe)
