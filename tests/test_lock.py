"""One writer per output directory: real driver processes contend for the lease lock, locally and on (moto) S3.

A holder is a subprocess that takes the lock and sleeps; the second driver is
another subprocess (or this process) on the same output directory.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from xqg_ray.config import StorageConfig
from xqg_ray.store.lock import LOCK_NAME, LocalLockFile, OutputLock, OutputLocked, S3LockObject, hold_output
from xqg_ray.store.storage import Storage, join

REPO = Path(__file__).resolve().parents[1]

DRIVER = r"""
import sys, time
from xqg_ray.config import StorageConfig
from xqg_ray.store.lock import OutputLock, OutputLocked
from xqg_ray.store.storage import Storage
root, endpoint, lease, renew, wait, sleep = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:7])
st = Storage(StorageConfig(s3_endpoint=endpoint, access_key="testing", secret_key="testing") if endpoint else None)
try:
    with OutputLock(st, root, lease_s=lease, renew_s=renew, wait_s=wait, poll_s=0.1):
        print("held", flush=True)
        time.sleep(sleep)
except OutputLocked as e:
    print(f"xqg-ray: {e}", flush=True)
    sys.exit(2)
"""


def _driver(root: str, endpoint: str, lease: float, renew: float, wait: float, sleep: float) -> list:
    return [sys.executable, "-c", DRIVER, root, endpoint, str(lease), str(renew), str(wait), str(sleep)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """(storage, output root, endpoint for a driver subprocess) on local disk or in the moto bucket."""
    if request.param == "local":
        return Storage(), str(tmp_path / "out"), ""
    endpoint = request.getfixturevalue("s3_endpoint")
    storage = Storage(StorageConfig(s3_endpoint=endpoint, access_key="testing", secret_key="testing"))
    return storage, f"s3://xqg-test/locks/{uuid.uuid4().hex[:8]}", endpoint


def _lock(storage: Storage, root: str) -> dict:
    # moto's server can answer a GET while the holder's renewal PUT of the same key is half written
    # (seen once: a 200-byte body followed by the older body's last byte); S3 itself is atomic, and the
    # lock's own read treats such a body as a lock renewed at its modification time (OutputLock.holder).
    for _ in range(20):
        try:
            return json.loads(storage.read_bytes(join(root, LOCK_NAME)))
        except ValueError:
            time.sleep(0.05)
    return json.loads(storage.read_bytes(join(root, LOCK_NAME)))


@pytest.fixture
def holder(place):
    """A driver process holding the lock (lease 1 s, renewed every 0.2 s) for up to 60 s; ended after the test."""
    storage, root, endpoint = place
    proc = subprocess.Popen(_driver(root, endpoint, 1.0, 0.2, 0, 60), env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_driver_stops_at_once_naming_the_holder(place, holder):
    storage, root, endpoint = place
    started = _lock(storage, root)["started"]
    t0 = time.monotonic()
    r = subprocess.run(_driver(root, endpoint, 60, 10, 0, 0), env=_env(), capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 15
    assert r.returncode == 2, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    m = re.fullmatch(
        re.escape(f"xqg-ray: {root} is in use by another xqg-ray run (host {socket.gethostname()}, pid {holder.pid}, "
                  f"started {started}, lease renewed ") + r"[0-9] s ago" + re.escape(
            f"): wait for it to end or set another output_dir; if that run is dead, its lock {join(root, LOCK_NAME)} "
            "expires 1 s after its last renewal"), lines[0])
    assert m, lines[0]
    assert _lock(storage, root)["pid"] == holder.pid  # the loser changed nothing


def test_a_held_lock_is_never_taken_over_its_lease_is_renewed(place, holder):
    storage, root, _ = place
    first = _lock(storage, root)["renewed"]
    contender = OutputLock(storage, root, lease_s=1.0, renew_s=0.2, wait_s=3.0, poll_s=0.2)
    contender.host = "another-host"  # so only the lease decides, not the same-host pid check
    t0 = time.monotonic()
    with pytest.raises(OutputLocked, match=r"\(waited 3 s\)"):
        contender.acquire()
    assert time.monotonic() - t0 >= 3.0  # three whole leases went by
    now = _lock(storage, root)
    assert now["pid"] == holder.pid and now["renewed"] > first + 2.0


def test_a_waiting_driver_gets_the_lock_when_the_holder_ends(place):
    storage, root, endpoint = place
    proc = subprocess.Popen(_driver(root, endpoint, 60, 0.5, 0, 1.0), env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    with OutputLock(storage, root, wait_s=30, poll_s=0.1) as lock:
        assert lock.held and _lock(storage, root)["token"] == lock.token
    assert proc.wait(timeout=30) == 0


def test_an_expired_lease_is_taken_over(place):
    storage, root, _ = place
    stale = {"host": "another-host", "pid": 4242, "started": "2026-01-01T00:00:00Z", "renewed": time.time() - 61,
             "lease_s": 60, "token": "dead"}
    storage.write_bytes(join(root, LOCK_NAME), json.dumps(stale).encode())
    with OutputLock(storage, root) as lock:
        assert _lock(storage, root)["token"] == lock.token
    assert not storage.exists(join(root, LOCK_NAME))


def test_a_lease_not_yet_expired_on_another_host_is_held(place):
    storage, root, _ = place
    t0 = time.time()
    live = {"host": "another-host", "pid": 4242, "started": "2026-01-01T00:00:00Z", "renewed": t0 - 50,
            "lease_s": 60, "token": "alive"}
    storage.write_bytes(join(root, LOCK_NAME), json.dumps(live).encode())
    with pytest.raises(OutputLocked, match=r"\(host another-host, pid 4242, started 2026-01-01T00:00:00Z, lease renewed (\d+) s ago\)") as err:
        OutputLock(storage, root).acquire()
    # 50 s when the acquire is quick; a loaded machine (an S3 round trip that takes a second) may see 51
    age = int(re.search(r"renewed (\d+) s ago", str(err.value)).group(1))
    assert 50 <= age <= 50 + math.ceil(time.time() - t0)
    assert _lock(storage, root)["token"] == "alive"


def test_a_killed_holder_on_this_host_is_taken_over_at_once(place):
    storage, root, endpoint = place
    proc = subprocess.Popen(_driver(root, endpoint, 600, 100, 0, 60), env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()  # no clean-up runs: the lock stays behind with a 600 s lease
    proc.wait()
    assert _lock(storage, root)["pid"] == proc.pid
    with hold_output(storage, root) as lock:
        assert _lock(storage, root)["token"] == lock.token


def test_release_removes_the_lock_also_after_an_error(place):
    storage, root, _ = place
    with OutputLock(storage, root):
        assert storage.exists(join(root, LOCK_NAME))
    assert not storage.exists(join(root, LOCK_NAME))
    with pytest.raises(RuntimeError, match="boom"):
        with OutputLock(storage, root):
            raise RuntimeError("boom")
    assert not storage.exists(join(root, LOCK_NAME))


def test_a_take_over_of_a_version_that_changed_fails_and_keeps_it(place):
    """The compare in compare-and-swap: a renewal between reading a lock and taking it wins."""
    storage, root, _ = place
    uri = join(root, LOCK_NAME)
    storage.write_bytes(uri, b'{"token": "renewed"}')
    if root.startswith("s3://"):
        backend = S3LockObject(storage, uri)
        old = '"0123456789abcdef0123456789abcdef"'
    else:
        backend = LocalLockFile(uri)
        old = b'{"token": "as read before"}'
    assert backend.take(old, b'{"token": "thief"}') is None
    assert storage.read_bytes(uri) == b'{"token": "renewed"}'
    assert backend.create(b'{"token": "second"}') is None
    assert storage.read_bytes(uri) == b'{"token": "renewed"}'
    if not root.startswith("s3://"):
        assert sorted(os.listdir(root)) == [LOCK_NAME]  # nothing moved aside is left behind


def test_the_driver_takes_the_lock_before_it_writes_anything(place, holder, shared_datasets, capsys):
    """Needs the flows.py wiring in the h6 report: `xqg-ray prepare` beside a running driver stops in one line."""
    from xqg_ray.cli import main

    storage, root, endpoint = place
    s3 = [f"storage.s3_endpoint={endpoint}", "storage.access_key=testing", "storage.secret_key=testing"] if endpoint else []
    rc = main(["prepare", str(REPO / "conf" / "smoke.yaml"), f"output_dir={root}", f"benchmark.source={shared_datasets}",
               "ray.progress=false", *s3])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"xqg-ray: {root} is in use by another xqg-ray run (host {socket.gethostname()}, pid {holder.pid}, ")
    assert not storage.exists(join(root, "config.yaml"))  # the loser wrote nothing
    assert _lock(storage, root)["pid"] == holder.pid


def test_a_driver_that_lost_its_lock_neither_publishes_nor_deletes(place):
    """A holder that stalled past its lease and was taken over stops at its next publish: no manifest,
    no pointer, and the files another run's manifests name stay."""
    from xqg_ray.store.ledger import Ledger

    storage, root, _ = place
    storage.write_text(join(root, "stage/data/other-run.parquet"), "named by the new holder")
    lock = OutputLock(storage, root, lease_s=30, renew_s=10).acquire()
    try:
        lock.lost = True  # what renew_loop sets when another driver took the lease over
        with pytest.raises(OutputLocked, match=r"this run lost its lock to another driver .* stopped before publishing or deleting anything"):
            Ledger(storage, root, "stage").publish("f" * 64, {"units": []})
        assert not storage.exists(join(root, "stage/current.json"))
        assert storage.exists(join(root, "stage/data/other-run.parquet"))
    finally:
        lock.release()
    # Released (this process no longer holds a lock on root): publishing works again.
    Ledger(storage, root, "stage").publish("f" * 64, {"units": []})
    assert storage.exists(join(root, "stage/current.json"))
