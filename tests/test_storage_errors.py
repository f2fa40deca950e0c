"""Storage failures a user can fix are one line naming the bucket, directory or setting; a failed write leaves no temp file."""

from __future__ import annotations

import builtins
import errno
import os

import pytest

from xqg_ray.config import StorageConfig
from xqg_ray.errors import user_error
from xqg_ray.store.lock import OutputLock
from xqg_ray.store.storage import Storage, StorageError, check_writable

BUCKET = "xqg-test"  # created by the s3_endpoint fixture
MISSING = "xqg-no-such-bucket"


@pytest.fixture
def s3(s3_endpoint) -> Storage:
    return Storage(StorageConfig(s3_endpoint=s3_endpoint, access_key="testing", secret_key="testing"))


def _no_bucket(uri: str) -> str:
    return (f"the bucket '{MISSING}' (of {uri}) does not exist: create it, or fix the setting that names it "
            "(output_dir for outputs), or storage.s3_endpoint if it points at the wrong server")


def test_a_write_into_a_missing_bucket_names_the_bucket_and_the_setting(s3):
    uri = f"s3://{MISSING}/run/config.yaml"
    with pytest.raises(StorageError) as e:
        s3.write_text(uri, "x: 1\n")
    assert str(e.value) == _no_bucket(uri)
    assert user_error(e.value) is e.value  # the CLI prints it as one line


def test_the_lock_on_a_missing_bucket_names_the_bucket(s3):
    uri = f"s3://{MISSING}/run/.xqg-ray.lock"
    with pytest.raises(StorageError) as e:
        OutputLock(s3, f"s3://{MISSING}/run").acquire()
    assert str(e.value) == _no_bucket(uri)


def test_check_writable_refuses_a_missing_bucket_and_accepts_a_real_one(s3):
    with pytest.raises(StorageError) as e:
        check_writable(s3, f"s3://{MISSING}/run")
    assert str(e.value) == (f"the bucket '{MISSING}' (of output_dir s3://{MISSING}/run) does not exist: create it or fix "
                            "output_dir (or storage.s3_endpoint if it points at the wrong server)")
    check_writable(s3, f"s3://{BUCKET}/probe-run")
    assert s3.list_files(f"s3://{BUCKET}/probe-run") == []  # the probe is gone


def test_check_writable_on_local_disk(tmp_path):
    storage = Storage()
    check_writable(storage, str(tmp_path / "new" / "out"))
    assert os.listdir(tmp_path / "new" / "out") == []  # made, written, probe removed
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match=rf"^cannot write {tmp_path}/file/out/\.write-probe-[0-9a-f]{{8}} \(6 bytes\): "):
        check_writable(storage, str(tmp_path / "file" / "out"))


def test_a_full_disk_names_the_directory_and_the_bytes_and_leaves_no_temp_file(tmp_path, monkeypatch):
    storage = Storage()
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "old.png").write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    uri = str(plots / "old.png")
    with pytest.raises(StorageError) as e:
        storage.write_bytes(uri, b"x" * 1234)
    assert str(e.value) == (f"no space left on the device holding {plots} while writing {uri} (1234 bytes): "
                            "free space there or set output_dir to a larger disk")
    assert sorted(os.listdir(plots)) == ["old.png"]  # no .tmp-* left behind
    assert (plots / "old.png").read_bytes() == b"old"  # the old version is untouched


def test_permission_denied_names_the_directory(tmp_path, monkeypatch):
    storage = Storage()
    real_open = builtins.open

    def denied(path, mode="r", *a, **kw):
        if "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", denied)
    uri = str(tmp_path / "out" / "metrics.json")
    with pytest.raises(StorageError) as e:
        storage.write_text(uri, "{}")
    assert str(e.value) == (f"permission denied to write {uri}: make {tmp_path / 'out'} writable for this user "
                            "or set output_dir elsewhere")
    assert os.listdir(tmp_path / "out") == []


def test_an_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch):
    storage = Storage()

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        storage.write_bytes(str(tmp_path / "a.json"), b"{}")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("endpoint", ["http://minio:s3cr3t@127.0.0.1:9000", "https://:s3cr3t@s3.example.com"])
def test_credentials_in_the_endpoint_are_refused_without_echoing_them(endpoint):
    storage = Storage(StorageConfig(s3_endpoint=endpoint))
    host = endpoint.rsplit("@", 1)[1]
    scheme = endpoint.split("://")[0]
    for call in (storage.s3, storage.s3_client):
        with pytest.raises(StorageError) as e:
            call()
        msg = str(e.value)
        assert msg == (f"storage.s3_endpoint ({scheme}://***@{host}) holds credentials: remove the user:password@ part "
                       "and set storage.access_key and storage.secret_key (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) instead")
        assert "s3cr3t" not in msg


def test_an_endpoint_without_a_scheme_is_one_line():
    with pytest.raises(StorageError) as e:
        Storage(StorageConfig(s3_endpoint="127.0.0.1:9000")).s3()
    assert str(e.value) == "storage.s3_endpoint must look like http://host:port or https://host (got '127.0.0.1:9000')"
