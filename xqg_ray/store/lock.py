"""One writer per output directory: the lease lock a driver holds while it writes under ``output_dir``.

Two drivers on one output directory would delete each other's committed files
(each stage's clean-up deletes what its own manifest does not name), so the
driver takes an :class:`OutputLock` before it writes anything and keeps it
until the run ends.  A second driver stops at once (or after waiting
``wait_s``) with :class:`OutputLocked`, one line naming the holder.

The rule
--------
The lock is one small JSON file or object, ``{output_dir}/.xqg-ray.lock``: at
the root beside ``config.yaml``, outside every stage directory, so no stage's
clean-up ever lists it.  It names the holder (host, pid, start time), a random
token, the lease length and the time of its last renewal.  The holder rewrites
it every ``renew_s`` seconds from a background thread.  Another driver finds it

* **held** while its last renewal is at most ``lease_s`` seconds old and, when
  the holder runs on this same host, its pid is alive;
* **stale** once the lease expired (the holder crashed, was killed or lost its
  machine: nobody renews), or at once when the holder is on this host and its
  pid is gone.  A stale lock is taken over; a held one never is.

Hosts' clocks must agree to well within ``lease_s`` (NTP does; the default
lease is 60 s, renewed every 10 s).  A lock file being created (still empty)
counts from its modification time.

Mechanisms
----------
*Create*: local ``os.open(O_CREAT | O_EXCL)``, and S3 ``PutObject`` with
``If-None-Match: *``: exactly one creator wins.  We rely on the server
honouring conditional writes (AWS S3 since 2024, MinIO, moto); a server that
ignores them is caught by reading the lock back and comparing the token.

*Take over a stale lock*: local, rename the stale file to a unique name, check
that what moved is exactly the stale content read (if a renewal got in between,
put it back with ``link``, which fails if a newer lock appeared), then create
as above; S3, ``PutObject`` with ``If-Match: <ETag of the stale object>``: only
one taker wins, and a renewal in between makes the take fail.

*Renew*: S3 ``PutObject`` with ``If-Match`` of our last ETag; local, check the
token and replace atomically.  A renewal that finds another token has lost the
lock (possible only after the holder failed to renew for a whole lease): it
stops renewing and sets :attr:`OutputLock.lost`.

*Release* (leaving the ``with`` block, normally or by an exception): delete the
lock if it is still ours (S3 ``DeleteObject`` with ``If-Match``; compare then
delete on servers without conditional deletes).  A crashed holder's lock
becomes stale by its lease.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from typing import Any, Dict, Optional, Tuple

import pyarrow.fs as pafs

from ..errors import UserError
from .storage import Storage, StorageError, join, storage_error, translated

LOCK_NAME = ".xqg-ray.lock"
LEASE_S = 60.0
RENEW_S = 10.0

log = logging.getLogger(__name__)

# (raw bytes, tag that a conditional replace must match, modification time in epoch seconds)
Seen = Tuple[bytes, Any, float]


class OutputLocked(UserError):
    """Another live driver holds the output directory; the message names it and what to do."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) said alive


class LocalLockFile:
    """The lock as a local file; the tag of a version is its exact bytes."""

    def __init__(self, path: str):
        self.path, self.uri = path, path

    def read(self) -> Optional[Seen]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
                return raw, raw, os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None

    def create(self, data: bytes) -> Optional[Any]:
        with translated(self.uri, "create the lock"):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        return data

    def take(self, tag: Any, data: bytes) -> Optional[Any]:
        moved = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return None  # released or taken meanwhile: start over
        with open(moved, "rb") as f:
            got = f.read()
        if got != tag:  # renewed (or replaced) after we read it: put it back unless a newer lock appeared
            try:
                os.link(moved, self.path)
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system: a plain rename, still our best effort
                os.replace(moved, self.path)
                return None
            os.remove(moved)
            return None
        os.remove(moved)
        return self.create(data)

    def renew(self, tag: Any, data: bytes) -> Optional[Any]:
        seen = self.read()
        if seen is None:  # moved away by a taker who then found it live and is putting it back
            return self.create(data)
        if seen[0] != tag:
            return None
        tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return data

    def remove(self, tag: Any) -> None:
        seen = self.read()
        if seen is not None and seen[0] == tag:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


class S3LockObject:
    """The lock as an S3 object written with conditional PUTs; the tag of a version is its ETag."""

    def __init__(self, storage: Storage, uri: str):
        self.uri = uri
        self.bucket, self.key = uri[len("s3://"):].split("/", 1)
        self.client = storage.s3_client()

    def _code(self, e: Exception) -> str:
        return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))

    def _call(self, action: str, fn, **kw) -> Optional[Dict[str, Any]]:
        """``fn(**kw)``; None when a condition failed; other failures as one-line StorageErrors."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, Key=self.key, **kw)
        except ClientError as e:
            # 412: the condition did not hold; 409: a concurrent conditional write won (AWS asks to retry).
            if self._code(e) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return None
            if action == "read" and self._code(e) in ("NoSuchKey", "404"):
                return None
            raise storage_error(e, self.uri, action) from None
        except BotoCoreError as e:
            raise storage_error(e, self.uri, action) from None

    def read(self) -> Optional[Seen]:
        r = self._call("read", self.client.get_object)
        if r is None:
            return None
        return r["Body"].read(), r["ETag"], r["LastModified"].timestamp()

    def create(self, data: bytes) -> Optional[Any]:
        r = self._call("create the lock", self.client.put_object, Body=data, IfNoneMatch="*")
        return None if r is None else r["ETag"]

    def take(self, tag: Any, data: bytes) -> Optional[Any]:
        r = self._call("take over the lock", self.client.put_object, Body=data, IfMatch=tag)
        return None if r is None else r["ETag"]

    renew = take  # the same conditional replace: it fails if anyone wrote since our last version

    def remove(self, tag: Any) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=tag)
        except ClientError as e:
            if self._code(e) in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                return  # not ours any more (taken over) or already gone
            seen = self.read()  # a server without conditional deletes: compare, then delete
            if seen is not None and seen[1] == tag:
                self._call("release the lock", self.client.delete_object)


# The locks this process holds, by output root: what a stage checks before it
# publishes or deletes anything (see ensure_still_held).
_HELD: Dict[str, "OutputLock"] = {}


def ensure_still_held(root: str) -> None:
    """Raise :class:`OutputLocked` if this process held the lock on ``root`` and lost it to another driver.

    Called before a stage publishes a manifest and deletes what it no longer names: a
    driver that stalled past its lease (and was taken over) must not delete the files
    the new holder's manifests name.  A root this process never locked (a library
    caller writing directly) is not checked.
    """
    lock = _HELD.get(root)
    if lock is not None and lock.lost:
        raise OutputLocked(f"{root}: this run lost its lock to another driver (it could not renew it for {lock.lease_s:g} s); "
                           f"it stopped before publishing or deleting anything: rerun when the other run has finished")


class OutputLock:
    """The lease lock on one output directory (local or ``s3://``); a context manager.

    ``lease_s``: how long a lock stays held without renewal; ``renew_s``: how
    often the holder renews it; ``wait_s``: how long :meth:`acquire` waits for a
    held lock before :class:`OutputLocked` (0: fail at once); ``poll_s``: how
    often it looks again while waiting.
    """

    def __init__(self, storage: Storage, root: str, *, lease_s: float = LEASE_S, renew_s: float = RENEW_S,
                 wait_s: float = 0.0, poll_s: float = 1.0):
        if not 0 < renew_s < lease_s:
            raise ValueError(f"renew_s ({renew_s}) must be positive and shorter than lease_s ({lease_s})")
        self.root, self.uri = root, join(root, LOCK_NAME)
        self.lease_s, self.renew_s, self.wait_s, self.poll_s = lease_s, renew_s, wait_s, poll_s
        self.token = uuid.uuid4().hex
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.lost = False
        self.backend: Any = None
        fs, path = storage.resolve(root)
        if root.startswith("s3://"):
            self.backend = S3LockObject(storage, self.uri)
        elif isinstance(fs, pafs.LocalFileSystem):
            self.backend = LocalLockFile(os.path.join(path, LOCK_NAME))
        else:
            warnings.warn(f"{root}: only local and s3:// output directories can be locked; "
                          "make sure no other run writes there", stacklevel=2)
        self.tag: Any = None
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None

    # -- the lock's content -----------------------------------------------------
    def payload(self) -> bytes:
        return json.dumps({"host": self.host, "pid": self.pid, "started": self.started, "renewed": time.time(),
                           "lease_s": self.lease_s, "token": self.token, "output_dir": self.root}).encode("utf-8")

    def holder(self, seen: Seen) -> Dict[str, Any]:
        """The lock's fields; an unreadable (half-created) lock counts as renewed at its modification time."""
        try:
            info = json.loads(seen[0])
        except ValueError:
            info = None
        if not isinstance(info, dict) or not isinstance(info.get("renewed"), (int, float)):
            info = {"renewed": seen[2]}
        return info

    def stale(self, info: Dict[str, Any]) -> bool:
        """The rule of the module docstring: lease expired, or a holder on this host whose pid is gone."""
        lease = info.get("lease_s") if isinstance(info.get("lease_s"), (int, float)) else self.lease_s
        if time.time() - info["renewed"] > lease:
            return True
        pid = info.get("pid")
        return info.get("host") == self.host and isinstance(pid, int) and pid > 0 and not pid_alive(pid)

    def mine(self) -> bool:
        seen = self.backend.read()
        return seen is not None and self.holder(seen).get("token") == self.token

    def message(self, info: Dict[str, Any]) -> str:
        age = time.time() - info["renewed"]
        who = (f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}, "
               f"lease renewed {age:.0f} s ago")
        lease = info.get("lease_s", self.lease_s)
        waited = f" (waited {self.wait_s:g} s)" if self.wait_s > 0 else ""
        return (f"{self.root} is in use by another xqg-ray run ({who}){waited}: wait for it to end or set another "
                f"output_dir; if that run is dead, its lock {self.uri} expires {lease:g} s after its last renewal")

    # -- acquire / renew / release -------------------------------------------------
    @property
    def held(self) -> bool:
        return self.tag is not None and not self.lost

    def acquire(self) -> "OutputLock":
        """Take the lock, waiting up to ``wait_s`` for a held one; then renew it in the background."""
        if self.backend is None or self.tag is not None:
            return self
        deadline = time.monotonic() + self.wait_s
        while True:
            tag = self.backend.create(self.payload())
            if tag is not None and self.mine():
                break
            seen = self.backend.read()
            if seen is None:
                continue  # released in between: create again
            info = self.holder(seen)
            if info.get("token") == self.token:  # a server that ignored If-None-Match, and our write is the one there
                tag = seen[1]
                break
            if self.stale(info):
                log.warning("taking over the stale lock %s (%s)", self.uri, json.dumps(info))
                tag = self.backend.take(seen[1], self.payload())
                if tag is not None and self.mine():
                    break
                time.sleep(0.05)  # another driver moved first: look again
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise OutputLocked(self.message(info))
            time.sleep(min(self.poll_s, left))
        self.tag, self.lost = tag, False
        _HELD[self.root] = self
        self.stop.clear()
        self.thread = threading.Thread(target=self.renew_loop, name="xqg-output-lock", daemon=True)
        self.thread.start()
        return self

    def renew_loop(self) -> None:
        while not self.stop.wait(self.renew_s):
            try:
                tag = self.backend.renew(self.tag, self.payload())
            except (OSError, StorageError) as e:  # a network blip: try again next time, the lease has room
                log.warning("could not renew the lock %s: %s", self.uri, e)
                continue
            if tag is None:
                self.lost = True
                log.error("lost the lock %s: another driver took it over after this one failed to renew it "
                          "for %g s; stop this run", self.uri, self.lease_s)
                return
            self.tag = tag

    def release(self) -> None:
        """Stop renewing and delete the lock if it is still ours."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.tag is not None and not self.lost:
            try:
                self.backend.remove(self.tag)
            except (OSError, StorageError) as e:  # never hide the run's own error; the lease frees it
                log.warning("could not delete the lock %s (%s); it expires %g s after its last renewal", self.uri, e, self.lease_s)
        self.tag = None
        if _HELD.get(self.root) is self:
            del _HELD[self.root]

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def hold_output(storage: Storage, root: str, wait_s: float = 0.0) -> OutputLock:
    """The driver's lock on ``root``, taken (use it as ``with hold_output(storage, root):`` around the run)."""
    return OutputLock(storage, root, wait_s=wait_s).acquire()


__all__ = ["LOCK_NAME", "OutputLock", "OutputLocked", "ensure_still_held", "hold_output", "pid_alive"]
