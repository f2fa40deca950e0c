"""URI-based storage: local paths and ``s3://`` through ``pyarrow.fs``.

Every artifact is addressed by a URI string, so moving a run to object storage
is a configuration change.  Writes are atomic: local files are written to a
temporary name and renamed; an S3 PUT is atomic per object already.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import uuid
from typing import Any, List, Optional, Tuple

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..config import StorageConfig


def is_remote(uri: str) -> bool:
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
                scheme, host = self.cfg.s3_endpoint.split("://", 1)
                kw.update(endpoint_override=host, scheme=scheme)
            if self.cfg.access_key:
                kw.update(access_key=self.cfg.access_key, secret_key=self.cfg.secret_key)
                if self.cfg.session_token:
                    kw["session_token"] = self.cfg.session_token
            self._s3 = pafs.S3FileSystem(**kw)
        return self._s3

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
        return fs.get_file_info(path).type != pafs.FileType.NotFound

    def is_dir(self, uri: str) -> bool:
        fs, path = self.resolve(uri)
        return fs.get_file_info(path).type == pafs.FileType.Directory

    def list_files(self, uri: str, suffix: str = "") -> List[str]:
        """Files below a directory URI (recursive), sorted, as URIs."""
        fs, path = self.resolve(uri)
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        out = [i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix)]
        prefix = uri[: len(uri) - len(path)] if uri.startswith("s3://") else ""
        return sorted(prefix + p if prefix else p for p in out)

    def list_relative(self, uri: str) -> List[str]:
        """Files below a directory URI (recursive), as sorted paths relative to it."""
        fs, path = self.resolve(uri)
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
        base = path.rstrip("/") + "/"
        return sorted(i.path[len(base):] for i in infos if i.type == pafs.FileType.File and i.path.startswith(base))

    # -- bytes --------------------------------------------------------------
    def read_bytes(self, uri: str) -> bytes:
        fs, path = self.resolve(uri)
        # compression=None: the default "detect" would hand back a .gz file decompressed.
        with fs.open_input_stream(path, compression=None) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Atomic write: readers see the old object or the new one, never half."""
        fs, path = self.resolve(uri)
        if isinstance(fs, pafs.LocalFileSystem):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return
        parent = posixpath.dirname(path)
        if parent:
            fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(path, compression=None) as f:  # one PUT: atomic per object; no gzip of .gz names
            f.write(data)

    def delete(self, uri: str) -> None:
        fs, path = self.resolve(uri)
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
